// Shutdowns from inside the VM (docs/workstation.md#os-shutdown): `sudo shutdown`,
// `poweroff`, `reboot` are not how the platform stops an instance, so when one happens
// the control plane is told (event os_shutdown) before the agent exits, to reconcile the
// instance's state. Two ways to notice: logind's PrepareForShutdown, with a delay
// inhibitor lock that holds the shutdown until the event is delivered (or report_wait
// passes); and, without logind, the agent's own SIGTERM while systemd says the system is
// "stopping" (`systemctl is-system-running`).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/json/object.hpp>
#include <functional>

#include "agent/power/config.hpp"
#include "agent/power/logind.hpp"
#include "common/api.hpp"
#include "common/services.hpp"
#include "common/subsystem.hpp"

namespace instanced::power {

class Power final : public Subsystem {
 public:
  // `deliver`: waits until the control plane has acknowledged what is in the outbox, at
  // most the given time; true when it has.
  using Deliver = std::function<boost::asio::awaitable<bool>(Clock::steady_time::duration)>;
  Power(boost::asio::any_io_executor ex, Api& api, ServiceManager& services, Logind& logind, const PowerConfig& config,
        Deliver deliver);

  std::string name() const override { return "power"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `power` section.
  void reconfigure(const PowerConfig& config) { config_ = config; }

 private:
  boost::asio::awaitable<void> watch_logind();
  boost::asio::awaitable<void> report(std::string source, std::string detail);
  void publish();

  boost::asio::any_io_executor ex_;
  Api& api_;
  ServiceManager& services_;
  Logind& logind_;
  PowerConfig config_;
  Deliver deliver_;
  Logger log_;
  std::string watching_;  // how a shutdown is noticed
  bool reported_ = false;
};

}  // namespace instanced::power
