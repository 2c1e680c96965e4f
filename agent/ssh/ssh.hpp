// The SSH policy (docs/workstation.md#ssh): `ssh.policy` from the config, or set_ssh_policy
// from the control plane (kept in state_dir, so it holds across reboots and wins over the
// config until reset). enabled: the unit is enabled and running; disabled: disabled and
// stopped (`systemctl enable|disable --now`, so it also holds after a reboot). Looked at
// every ssh.interval: a unit changed by hand is drift, reported (ssh_drift) and undone.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <optional>
#include <string>

#include "agent/ssh/config.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/services.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::ssh {

class Ssh final : public Subsystem {
 public:
  Ssh(boost::asio::any_io_executor ex, Api& api, ServiceManager& services, const SshConfig& config, std::string state_dir);

  std::string name() const override { return "ssh"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `ssh` section.
  void reconfigure(const SshConfig& config);

  // set_ssh_policy {policy: enabled|disabled|unmanaged} or {reset: true} (back to the
  // config's). Applied at once (the answer comes after the look that applies it).
  boost::asio::awaitable<Result<boost::json::object>> set_policy(const boost::json::object& args);

  SshPolicy policy() const { return policy_; }
  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  boost::asio::awaitable<void> enforce();
  boost::asio::awaitable<void> enforce_once();
  void load();
  void publish();
  std::filesystem::path state_file() const;

  boost::asio::any_io_executor ex_;
  Api& api_;
  ServiceManager& services_;
  SshConfig config_;
  std::string state_dir_;
  Logger log_;
  SshPolicy policy_;
  std::string source_ = "config";
  std::string unit_state_, active_state_;  // as last seen
  bool compliant_seen_ = false;  // the unit was as the policy wants since it was set: a change now is drift
  std::uint64_t drifts_ = 0;
  std::optional<Clock::wall_time> last_drift_, applied_at_;
  std::string error_;
  bool looked_ = false;
  Wake wake_;  // the next look; pulsed by a reload or set_ssh_policy
  LoopLock enforcing_;  // one look at a time
  std::uint64_t generation_ = 0;  // bumped when the policy or the unit changes
};

}  // namespace instanced::ssh
