// instancectl: status, health, control and version.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {

int cmd_status(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/status");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  std::string state = str(v, "state");
  int rc = state == "ok" && str(v, "phase") == "running" ? kHealthy : state == "failed" ? kFailed : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  double uptime = v.as_object().contains("uptime_seconds") ? v.at("uptime_seconds").to_number<double>() : 0;
  std::cout << st.bold(fmt::format("instanced {} on {}", str(v, "version"), str(v, "instance"))) << ": "
            << st.state(state) << " (" << str(v, "phase") << "), up " << human_duration(uptime) << "\n";
  const auto& cfg = v.at("config");
  std::cout << "config: " << str(cfg, "file") << " (hash " << str(cfg, "hash").substr(0, 12) << ")";
  if (auto* r = cfg.as_object().if_contains("last_reload"); r && str(*r, "result") == "failed")
    std::cout << ", last reload " << st.state("failed") << " at " << str(*r, "at");
  std::cout << "\n\n";
  std::size_t w = 10;
  for (const auto& [name, s] : v.at("subsystems").as_object()) w = std::max(w, name.size() + 2);
  std::cout << pad("SUBSYSTEM", w, 9) << pad("STATE", 10, 5) << pad("SINCE", 26, 5) << "SUMMARY\n";
  for (const auto& [name, s] : v.at("subsystems").as_object()) {
    std::string sstate = str(s, "state");
    std::cout << pad(std::string(name), w, name.size()) << pad(st.state(sstate), 10, sstate.size())
              << pad(str(s, "since"), 26, str(s, "since").size()) << str(s, "summary") << "\n";
  }
  return rc;
}

// The control channel's section of /v1/status.
int cmd_control(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/status");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  auto* c = v.at("subsystems").as_object().if_contains("control");
  if (!c) throw Failure(kRefused, "this agent has no control channel");
  int rc = str(*c, "state") == "ok" ? kHealthy : kDegraded;
  if (a.json) {
    std::cout << json::serialize(*c) << "\n";
    return rc;
  }
  std::cout << "control: " << st.state(str(*c, "state")) << " - " << str(*c, "summary") << "\n";
  if (auto* d = c->as_object().if_contains("details"); d && d->is_object())
    for (const auto& [k, val] : d->as_object())
      std::cout << "  " << pad(std::string(k), 18, k.size()) << (val.is_string() ? std::string(val.as_string()) : json::serialize(val)) << "\n";
  return rc;
}

int cmd_health(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/health");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200 && reply.status != 503)
    throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  int rc = reply.status == 200 ? kHealthy : str(v, "state") == "failed" ? kFailed : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << st.state(str(v, "status")) << "\n";
  if (auto* reasons = v.as_object().if_contains("reasons"); reasons && reasons->is_array())
    for (const auto& r : reasons->as_array()) std::cout << "  - " << (r.is_string() ? std::string(r.as_string()) : json::serialize(r)) << "\n";
  return rc;
}

int cmd_version(const Args& a) {
  auto reply = request(a.socket, http::verb::get, "/v1/version");
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}: {}", reply.status, reply.body));
  auto v = parse_json(reply.body);
  if (a.json)
    std::cout << reply.body;
  else
    std::cout << "instancectl " << INSTANCED_VERSION << "\ninstanced " << str(v, "version") << "\n";
  return kHealthy;
}

}  // namespace instanced::ctl
