// Setup scripts (docs/setup.md): `create` scripts once per instance, `start` scripts once
// per boot, in config order, after the prerequisite gates (required mounts) and before the
// job queue (which waits for done_gate()). Each run is started under its own monitor
// (instanced-run, docs/monitor.md), which bounds it (own session and process group,
// timeout with SIGTERM then SIGKILL to the group and to every process carrying the run's
// INSTANCED_RUN_ID marker), writes its capped log, forwards its lines to the journal and
// records its end. A run outlives an agent stop, crash or upgrade and is taken back at
// the next start; its end is recorded and told once.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/monitor/client.hpp"
#include "agent/setup/records.hpp"
#include "common/run_log.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/fs.hpp"
#include "common/gate.hpp"
#include "common/process.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::setup {

struct Environment {
  std::string instance;       // INSTANCED_INSTANCE
  std::string status_socket;  // INSTANCED_SOCKET, for instancectl in scripts
  // More INSTANCED_* variables from other subsystems (mount points, GPU state), asked
  // for when each script starts.
  std::function<std::vector<std::pair<std::string, std::string>>()> extra;
};

class Setup final : public Subsystem {
 public:
  Setup(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, const SetupConfig& config, std::string state_dir,
        Environment env, monitor::Launcher monitors);
  ~Setup() override;

  std::string name() const override { return "setup"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `setup` section: scripts added to the list run now.
  void reconfigure(const SetupConfig& config);

  // Start scripts wait until every prerequisite gate is open.
  void add_prerequisite(Gate& gate) { prerequisites_.push_back(&gate); }
  // Open once every script of this boot has succeeded (or failed with continue_on_error).
  Gate& done_gate() { return done_; }

  // Queues a run of NAME, whatever its state, and then whatever the sequence still needs.
  // The error says why not: unknown script, already running or queued.
  Result<std::string> rerun(const std::string& name);
  // Until the run queued by rerun() (its ticket) has ended; its record, or nothing if the
  // agent is stopping.
  boost::asio::awaitable<std::optional<ScriptRecord>> wait_for_run(std::string ticket);

  // The drain before the VM stops or restarts: a running script is given up to
  // setup.stop_wait to end; still running then, the stop is refused with its name.
  boost::asio::awaitable<Result<std::string>> drain(std::string action);

  // A script runs now (the idle detector counts it as activity).
  bool running() const { return live_ != nullptr; }

  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  struct Live;
  enum class Decision { run, done, blocked };

  boost::asio::awaitable<void> sequence();
  boost::asio::awaitable<void> run_script(const ScriptConfig& script);
  std::optional<RunRecord> begin_run(const ScriptConfig& script);
  boost::asio::awaitable<Result<monitor::Run>> launch_script(const ScriptConfig& script, std::string run_id);
  boost::asio::awaitable<void> follow(std::string name);
  boost::asio::awaitable<ScriptState> outcome_of(const monitor::WorkloadExit& e, RunRecord& run,
                                                 std::vector<std::string>& tail);
  void end_run(const std::string& name, RunRecord run, ScriptState outcome, std::vector<std::string> tail);
  boost::asio::awaitable<void> until_no_run();
  boost::asio::awaitable<void> recover_interrupted();
  boost::asio::awaitable<void> recover_run(std::string name);
  boost::asio::awaitable<void> interrupt(std::string name, std::string why);
  std::filesystem::path run_folder(const std::string& run_id) const;
  void remove_run_folder(const std::string& run_id);
  boost::asio::awaitable<Result<std::vector<pid_t>>> marked(std::string run_id);
  boost::asio::awaitable<std::vector<pid_t>> kill_marked(std::string run_id);
  Decision decide(const ScriptConfig& script) const;
  // The configured script of that name; nothing when the configuration has none.
  const ScriptConfig* configured(const std::string& name) const;
  static Result<std::vector<std::string>> command_line(const ScriptConfig& script);
  std::vector<std::string> environment(const ScriptConfig& script, const UserIdentity& user,
                                       const std::string& run_id) const;
  void persist();
  void publish();
  void prune_logs(const std::string& script);
  status::Response log_response(const status::Request& req) const;
  status::Response rerun_response(const status::Request& req);

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  SetupConfig config_;
  std::string state_dir_;
  Environment env_;
  monitor::Launcher monitors_;
  Logger log_;
  std::string boot_id_;
  Records records_;
  std::optional<std::string> state_error_;  // the state file is unreadable: nothing runs
  bool dirty_ = false;                      // the last persist() failed; retried
  std::vector<Gate*> prerequisites_;
  Gate done_;
  std::deque<std::string> reruns_;  // names queued by rerun()
  std::map<std::string, std::string> tickets_;  // ticket -> name, until its run ends
  std::map<std::string, std::string> finished_tickets_;  // ticket -> name
  Wake wake_;  // pulsed to wake the loop (a rerun, a reload)
  Wake runs_changed_;  // pulsed when a run ends or a ticket goes
  std::string phase_ = "starting";
  std::unique_ptr<Live> live_;  // the run in progress
  std::string waiting_drain_;   // the action (prepare_stop, ...) whose drain waits for it
};

}  // namespace instanced::setup
