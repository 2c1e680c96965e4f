// instancectl: mounts: list, remount.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {

int cmd_mounts(const Args& a, const Style& st) {
  if (!a.operands.empty()) {
    if (a.operands[0] != "remount" || a.operands.size() != 2)
      usage_error("usage: instancectl mounts [remount NAME]");
    const std::string& name = a.operands[1];
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        usage_error(fmt::format("'{}' is not a mount name", name));
    auto reply = request(a.socket, http::verb::post, "/v1/mounts/remount?name=" + name);
    if (reply.status != 202) agent_refused(reply);
    std::cout << "remounting " << name << "; see it with: instancectl mounts\n";
    return kHealthy;
  }
  auto reply = request(a.socket, http::verb::get, "/v1/mounts");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& m : v.at("mounts").as_array())
    if (str(m, "state") != "mounted") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  if (v.at("mounts").as_array().empty()) {
    std::cout << "no mounts configured (storage.mounts)\n";
    return rc;
  }
  std::cout << pad("NAME", 14, 4) << pad("TYPE", 13, 4) << pad("MOUNT POINT", 32, 11) << pad("STATE", 11, 5)
            << pad("PROBE", 10, 5) << "REMOUNTS\n";
  for (const auto& m : v.at("mounts").as_array()) {
    std::string name = str(m, "name"), type = str(m, "type"), mp = str(m, "mount_point"), state = str(m, "state");
    if (auto* d = m.as_object().if_contains("driver"); d && type == "blob") type += "/" + json::value_to<std::string>(*d);
    const auto& probe = m.at("probe");
    std::string latency = probe.as_object().contains("latency_ms") ? fmt::format("{:.1f}ms", num(probe, "latency_ms")) : "-";
    if (probe.as_object().contains("blocked_for_s")) latency = fmt::format("{:.0f}s!", num(probe, "blocked_for_s"));
    std::string shown = state == "mounted" ? "ok" : state;
    std::cout << pad(name, 14, name.size()) << pad(type, 13, type.size()) << pad(mp, 32, mp.size())
              << pad(st.state(shown), 11, shown.size())
              << pad(latency, 10, latency.size()) << str(m, "remounts") << (m.at("required").as_bool() ? "" : "  (optional)")
              << "\n";
    if (m.as_object().contains("error")) {
      std::string reason = m.as_object().contains("reason") ? str(m, "reason") + ": " : "";
      std::cout << "    " << reason << str(m, "error") << "\n";
    }
  }
  return rc;
}

}  // namespace instanced::ctl
