// The system's service manager, through systemctl(1): the seam through which the agent
// restarts applications, applies the SSH policy and asks whether the system is going
// down. The product runs the real systemctl; tests give a recording stand-in program
// (the same command line interface) through services.systemctl.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>
#include <vector>

#include "common/child_io.hpp"
#include "common/clock.hpp"
#include "common/config_schema.hpp"
#include "common/process.hpp"
#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced {


// The service manager: systemctl, found on PATH unless a path is given.
struct ServicesConfig {
  std::string systemctl = "systemctl";
  Duration timeout = std::chrono::seconds(30);  // one systemctl call

  template <class V>
  void visit(V& v) {
    v("systemctl", systemctl, check::not_empty(), check::max_length(4096));
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(10)));
  }
};

class ServiceManager {
 public:
  virtual ~ServiceManager() = default;
  // `systemctl is-enabled UNIT`: "enabled", "disabled", "masked", "static", … (the word
  // systemctl prints, whatever its exit status).
  virtual boost::asio::awaitable<Result<std::string>> unit_file_state(std::string unit) = 0;
  // `systemctl is-active UNIT`: "active", "inactive", "failed", "activating", …
  virtual boost::asio::awaitable<Result<std::string>> active_state(std::string unit) = 0;
  // enable --now / disable --now / restart: ok, or the tool's own words.
  virtual boost::asio::awaitable<Result<void>> enable_now(std::string unit) = 0;
  virtual boost::asio::awaitable<Result<void>> disable_now(std::string unit) = 0;
  virtual boost::asio::awaitable<Result<void>> restart(std::string unit) = 0;
  // `systemctl is-system-running`: "running", "degraded", "stopping", … ("offline" or an
  // error where there is no systemd).
  virtual boost::asio::awaitable<Result<std::string>> system_state() = 0;
};

class Systemctl final : public ServiceManager {
 public:
  // `program`: a path, or a name looked up on PATH.
  Systemctl(ProcessRunner& runner, Clock& clock, std::string program, Duration timeout);

  boost::asio::awaitable<Result<std::string>> unit_file_state(std::string unit) override;
  boost::asio::awaitable<Result<std::string>> active_state(std::string unit) override;
  boost::asio::awaitable<Result<void>> enable_now(std::string unit) override;
  boost::asio::awaitable<Result<void>> disable_now(std::string unit) override;
  boost::asio::awaitable<Result<void>> restart(std::string unit) override;
  boost::asio::awaitable<Result<std::string>> system_state() override;

 private:
  boost::asio::awaitable<Result<CommandOutput>> call(std::vector<std::string> args);
  boost::asio::awaitable<Result<std::string>> word(std::vector<std::string> args);
  boost::asio::awaitable<Result<void>> act(std::vector<std::string> args);

  ProcessRunner& runner_;
  Clock& clock_;
  std::string program_;
  Duration timeout_;
};

}  // namespace instanced
