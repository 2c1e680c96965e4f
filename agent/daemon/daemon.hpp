// The daemon's life cycle: start the subsystems in order, READY=1, serve, reload on
// SIGHUP (validate fully, then swap; a bad file keeps the old config), and on SIGTERM
// STOPPING=1 and a bounded shutdown that stops the subsystems in reverse order.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <functional>
#include <memory>
#include <vector>

#include "agent/config/config.hpp"
#include "agent/daemon/cli.hpp"
#include "agent/status/views.hpp"
#include "common/api.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced {

// instance.name, or the host name when it is empty.
std::string instance_name(const Config& config);

class Daemon {
 public:
  Daemon(boost::asio::io_context& ioc, Api& api, const Options& options, LoadedConfig config,
         status::AgentInfo& info);

  // What a subsystem takes from a reloaded configuration: its own section(s).
  using Reconfigure = std::function<void(const Config&)>;
  // In start order; stopped in reverse. The daemon does not own them.
  void add(Subsystem& subsystem, Reconfigure reconfigure = {});
  // The same for a subsystem whose reconfigure() takes one section: `daemon.add(jobs, &Config::jobs)`.
  template <class S, class Section>
  void add(S& subsystem, Section Config::*section) {
    add(subsystem, [&subsystem, section](const Config& c) { subsystem.reconfigure(c.*section); });
  }
  // Runs the event loop until shutdown; returns the process exit status.
  int run();

  const Config& config() const { return config_.config; }
  // The running configuration with the files it was read from and each setting's origin.
  const LoadedConfig& loaded() const { return config_; }
  // Reads and validates the configuration again and swaps it in if valid (SIGHUP does
  // the same). The outcome is in AgentInfo::last_reload.
  boost::asio::awaitable<void> reload();

 private:
  struct Task {
    Subsystem* subsystem = nullptr;
    Reconfigure reconfigure;
    boost::asio::cancellation_signal signal;
    std::unique_ptr<Wake> ended;  // pulsed when the subsystem's run has returned
    bool done = false;
  };

  boost::asio::awaitable<void> main_flow();
  boost::asio::awaitable<void> supervise(Task& task);
  boost::asio::awaitable<std::optional<std::string>> run_once(Subsystem& subsystem);
  boost::asio::awaitable<void> shutdown();
  void start(Task& task);
  void set_status(const std::string& line);
  void publish_config_state();
  std::string read_boot_id();

  boost::asio::io_context& ioc_;
  Api& api_;
  Options options_;
  LoadedConfig config_;
  status::AgentInfo& info_;
  Logger log_;
  std::vector<std::unique_ptr<Task>> tasks_;
  boost::asio::cancellation_signal watchdog_signal_;
  int exit_code_ = 0;
  boost::json::object run_record_;  // what this run wrote to state_dir/agent/run.json
};

}  // namespace instanced
