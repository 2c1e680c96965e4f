// instancectl: self-update's last attempt (docs/update.md).
#include "agent/ctl/client.hpp"

namespace instanced::ctl {

// 0: none, or the last one was confirmed; 1: one is under way; 2: the last one was
// refused, rolled back or failed.
int cmd_update(const Args& a, const Style& st) {
  if (!a.operands.empty() && a.operands[0] != "status") usage_error("usage: instancectl update [status]");
  auto reply = request(a.socket, http::verb::get, "/v1/update");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  const auto& attempt = v.at("attempt");
  const std::string state = attempt.is_object() ? str(attempt, "state") : "";
  const int rc = state.empty() || state == "confirmed"                  ? kHealthy
                 : state == "installing" || state == "rolling_back" ? kDegraded
                                                                     : kFailed;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  if (state.empty()) {
    std::cout << "no update attempted (" << str(v, "public_keys") << " public key(s) configured)\n";
    return rc;
  }
  const std::string shown = state == "confirmed" ? "ok" : state == "installing" ? "starting" : "failed";
  std::cout << "last update: " << str(attempt, "from") << " -> " << str(attempt, "to") << ": "
            << st.state(shown) << " (" << state << ")\n"
            << "  package:    " << str(attempt, "url") << "\n"
            << "  sha256:     " << str(attempt, "sha256") << "\n"
            << "  started:    " << str(attempt, "started") << "\n";
  if (!str(attempt, "confirm_by").empty()) std::cout << "  confirm by: " << str(attempt, "confirm_by") << "\n";
  if (!str(attempt, "reason").empty()) std::cout << "  reason:     " << str(attempt, "reason") << "\n";
  if (v.at("installer_running").as_bool()) std::cout << "  the installer is running\n";
  return rc;
}

}  // namespace instanced::ctl
