// instancectl: apps, idle and ssh.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {

int cmd_apps(const Args& a, const Style& st) {
  if (!a.operands.empty()) usage_error("usage: instancectl apps");
  auto reply = request(a.socket, http::verb::get, "/v1/apps");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& app : v.at("apps").as_array())
    if (str(app, "state") != "up") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  if (v.at("apps").as_array().empty()) {
    std::cout << "no applications configured (applications.apps)\n";
    return rc;
  }
  std::cout << pad("NAME", 14, 4) << pad("STATE", 11, 5) << pad("PROBE", 10, 5) << pad("RESTARTS", 10, 8) << "ACTIVITY\n";
  for (const auto& app : v.at("apps").as_array()) {
    std::string name = str(app, "name"), state = str(app, "state");
    std::string latency = app.as_object().contains("latency_ms") ? fmt::format("{}ms", str(app, "latency_ms")) : "-";
    std::string restarts = str(app, "restarts") + (app.at("restart").as_bool() ? "" : " (off)");
    std::string activity = "-";
    if (auto* j = app.as_object().if_contains("jupyter")) {
      activity = fmt::format("{} kernels ({} busy), {} terminals", str(*j, "kernels"), str(*j, "busy_kernels"),
                             str(*j, "terminals"));
      if (j->as_object().contains("last_activity")) activity += ", last " + str(*j, "last_activity");
    }
    std::cout << pad(name, 14, name.size()) << pad(st.state(state == "up" ? "ok" : state), 11, state == "up" ? 2 : state.size())
              << pad(latency, 10, latency.size()) << pad(restarts, 10, restarts.size()) << activity << "\n";
    if (app.as_object().contains("reason")) std::cout << "    " << str(app, "reason") << "\n";
    if (app.as_object().contains("jupyter_error")) std::cout << "    Jupyter: " << str(app, "jupyter_error") << "\n";
  }
  return rc;
}

int cmd_idle(const Args& a) {
  if (!a.operands.empty()) usage_error("usage: instancectl idle");
  auto reply = request(a.socket, http::verb::get, "/v1/idle");
  if (reply.status != 200) agent_refused(reply);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto v = parse_json(reply.body);
  if (!v.at("enabled").as_bool()) {
    std::cout << "idle detection is off (idle.enabled)\n";
  } else if (v.at("idle").as_bool()) {
    std::cout << "idle since " << str(v, "idle_since") << "\n";
  } else if (v.as_object().contains("idle_since")) {
    std::cout << "quiet since " << str(v, "idle_since") << " (idle after " << str(v, "after_s") << "s)\n";
  } else {
    std::cout << "active:\n";
    for (const auto& r : v.at("activity").as_array()) std::cout << "  " << json::value_to<std::string>(r) << "\n";
  }
  const auto& s = v.at("schedule");
  std::cout << "schedule (" << str(s, "source") << ", " << str(s, "time_zone") << "):";
  if (s.at("stop").as_array().empty() && s.at("start").as_array().empty()) std::cout << " none";
  std::cout << "\n";
  for (const char* key : {"stop", "start"})
    for (const auto& e : s.at(key).as_array()) std::cout << "  " << key << "  " << json::value_to<std::string>(e) << "\n";
  if (s.as_object().contains("next_stop_local")) std::cout << "next stop:  " << str(s, "next_stop_local") << "\n";
  if (s.as_object().contains("next_start_local")) std::cout << "next start: " << str(s, "next_start_local") << "\n";
  return kHealthy;
}

int cmd_ssh(const Args& a) {
  if (!a.operands.empty()) usage_error("usage: instancectl ssh");
  auto reply = request(a.socket, http::verb::get, "/v1/ssh");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = v.as_object().contains("error") || (v.as_object().contains("compliant") && !v.at("compliant").as_bool())
               ? kDegraded
               : kHealthy;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << "policy:  " << str(v, "policy") << " (from the " << str(v, "source") << ")\n"
            << "unit:    " << str(v, "unit");
  if (v.as_object().contains("unit_file_state"))
    std::cout << ": " << str(v, "unit_file_state") << ", " << str(v, "active_state");
  std::cout << "\n";
  if (v.as_object().contains("applied_at")) std::cout << "applied: " << str(v, "applied_at") << "\n";
  std::cout << "drift:   undone " << str(v, "drifts") << " times"
            << (v.as_object().contains("last_drift") ? ", last " + str(v, "last_drift") : std::string()) << "\n";
  if (v.as_object().contains("error")) std::cout << "error:   " << str(v, "error") << "\n";
  return rc;
}

}  // namespace instanced::ctl
