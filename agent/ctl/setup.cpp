// instancectl: setup scripts: list, logs, rerun.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {
namespace {

int cmd_setup_logs(const Args& a, const std::string& name) { return follow_log(a, "/v1/setup/log?name=" + name); }

int cmd_setup_list(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/setup");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  std::string phase = str(v, "phase");
  int rc = phase == "done" ? kHealthy : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << "setup: " << st.state(phase == "done" ? "ok" : phase) << " (" << str(v, "succeeded") << " of "
            << str(v, "total") << " succeeded)\n";
  if (auto* e = v.as_object().if_contains("error")) std::cout << "  " << st.state("failed") << ": " << json::value_to<std::string>(*e) << "\n";
  const auto& scripts = v.at("scripts").as_array();
  if (scripts.empty()) return rc;
  std::size_t w = 6;
  for (const auto& s : scripts) w = std::max(w, str(s, "name").size() + 2);
  std::cout << "\n" << pad("SCRIPT", w, 6) << pad("WHEN", 8, 4) << pad("STATE", 13, 5) << pad("STARTED", 26, 7)
            << pad("DURATION", 10, 8) << pad("EXIT", 6, 4) << "REASON\n";
  for (const auto& s : scripts) {
    std::string state = str(s, "state");
    std::string started = "-", duration = "-", exit = "-", reason;
    if (auto* last = s.as_object().if_contains("last_run"); last && state != "pending") {
      started = field_or_dash(*last, "started");
      if (state != "running") {
        duration = fmt::format("{:.1f}s", last->at("duration_seconds").to_number<double>());
        exit = field_or_dash(*last, "exit_code");
        if (exit == "-" && str(*last, "signal") != "0") exit = "sig" + str(*last, "signal");
        reason = str(*last, "reason");
      }
    }
    std::string shown = state == "succeeded" ? "ok" : state;  // colour: green for ok
    std::cout << pad(str(s, "name"), w, str(s, "name").size()) << pad(str(s, "when"), 8, str(s, "when").size())
              << pad(st.state(shown) + (shown == "ok" ? std::string(" ") : std::string()), 13,
                     shown.size() + (shown == "ok" ? 1 : 0))
              << pad(started, 26, started.size()) << pad(duration, 10, duration.size()) << pad(exit, 6, exit.size())
              << reason << "\n";
  }
  return rc;
}

int cmd_setup_rerun(const Args& a, const std::string& name) {
  auto reply = request(a.socket, http::verb::post, "/v1/setup/rerun?name=" + name);
  if (reply.status != 202) agent_refused(reply);
  std::cout << "rerun of " << name << " queued; follow it with: instancectl setup logs " << name << " --follow\n";
  return kHealthy;
}

}  // namespace

int cmd_setup(const Args& a, const Style& st) {
  if (a.operands.empty()) return cmd_setup_list(a, st);
  const std::string& sub = a.operands[0];
  if ((sub == "logs" || sub == "rerun") && a.operands.size() == 2) {
    const std::string& name = a.operands[1];
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        usage_error(fmt::format("'{}' is not a script name", name));
    return sub == "logs" ? cmd_setup_logs(a, name) : cmd_setup_rerun(a, name);
  }
  usage_error("usage: instancectl setup [logs NAME [--follow] | rerun NAME]");
}

}  // namespace instanced::ctl
