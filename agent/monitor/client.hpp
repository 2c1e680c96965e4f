// The agent's side of a monitored workload (docs/monitor.md): starting instanced-run on a
// run folder, finding a run again after a restart, waiting for its end, cancelling it,
// reading its log while it runs and its end once it has ended.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "agent/monitor/workload.hpp"
#include "common/clock.hpp"
#include "common/fs.hpp"
#include "common/process.hpp"
#include "common/units.hpp"

namespace instanced::monitor {

// A monitor started ahead, without systemd (docs/monitor.md, "The spare monitor"): it waits
// for its run folder on a socket, so that a workload's start does not wait for the
// monitor's program to load. It ends, having done nothing, when the agent closes its end
// (the agent's stop or crash). Used on the event loop only.
class SpareMonitor {
 public:
  struct Handed {
    std::unique_ptr<Process> monitor;
    Fd channel;  // for spawned()
  };
  // The spare, handed `dir` (whose spec is written) and having said it took it; no monitor
  // when none waits, or it ended before it took the folder (killed, or a SIGTERM meant for
  // it arrived with the folder): the caller starts a monitor afresh. Waits for the spare's
  // answer or its end (its end of the socket closes), nothing else.
  boost::asio::awaitable<Handed> take(const std::filesystem::path& dir);
  // Until the spare handed a folder has spawned its workload (or could not), it ended, or
  // `bound` passed: then the next spare may start without taking a CPU from the workload's.
  static boost::asio::awaitable<void> spawned(Fd channel, Clock& clock, Duration bound);
  // Starts one (`spec` runs the monitor's program with --spare) unless one waits.
  Result<void> refill(ProcessRunner& runner, SpawnSpec spec);

 private:
  std::unique_ptr<Process> process_;
  Fd socket_;  // the end the folder is written to
};

// How monitors are started: as children of the agent in their own session (without
// systemd as PID 1: development, tests), or, when the agent is a systemd service, as
// transient units of their own in `slice` (systemd-run), outside the agent's control group
// so that stopping or restarting the agent's unit does not stop them.
struct Launcher {
  std::string program;      // instanced-run
  std::string systemd_run;  // systemd-run's path; empty: not under systemd
  std::string slice;        // instanced-jobs.slice
  std::vector<std::string> properties;  // the unit's properties ("KillMode=process"), under systemd
  bool cgroup_unified = true;  // the cgroup v2 hierarchy alone (else v1's, as on Ubuntu 18.04)
  // Without systemd: one monitor kept started ahead, shared by the launcher's copies
  // (started after the first launch: an agent that runs no workload holds none). nullptr:
  // every monitor is started when its workload starts.
  std::shared_ptr<SpareMonitor> spare;
};

// The monitor beside this program's own binary (/proc/self/exe), where the package and the
// build tree put it; systemd-run when this process is a systemd service (INVOCATION_ID set
// and /run/systemd/system present); which cgroup hierarchy the system has. Stats files:
// call it before the loop runs. `spare`: keep a monitor started ahead when not under
// systemd (a job's start is what its user waits for; a unit cannot be started ahead).
Launcher default_launcher(std::string slice, bool spare = false);

class Run {
 public:
  // Writes the spec (0600) in `dir` (created 0700; an earlier run's files removed) and
  // starts the monitor on it: through `runner` in its own session, its stdout to
  // /dev/null and its stderr the agent's (its messages beside the agent's); or as the
  // transient unit `unit` (systemd-run, bounded; the spec's own_cgroup set). Either way it
  // outlives the agent. An error names what failed.
  static boost::asio::awaitable<Result<Run>> launch(ProcessRunner& runner, Filesystem& fs, Clock& clock,
                                                    Launcher launcher, std::filesystem::path dir, std::string unit,
                                                    WorkloadSpec spec);

  // What an earlier agent's run folder holds: its end, a monitor still running (taken
  // back), or neither (the monitor is gone without recording the end: the reason says
  // what is known).
  struct Gone {
    std::string reason;
  };
  using Found = std::variant<WorkloadExit, Run, Gone>;
  // Reads the folder's files and /proc: call it off the event loop.
  static Found find(Filesystem& fs, const std::filesystem::path& dir);

  // Until the monitor has exited: its exit when it is this agent's child, else a pidfd
  // (Linux 5.3), else /proc looked at every `poll` (older kernels); a unit's monitor is
  // first waited for to record its start (kStartLimit). Cancellable.
  boost::asio::awaitable<void> ended(boost::asio::any_io_executor ex, Clock& clock, Filesystem& fs,
                                     Clock::steady_time::duration poll = std::chrono::seconds(1));
  // The end it recorded, once ended() has returned; an error when it recorded none.
  Result<WorkloadExit> exit_record(Filesystem& fs) const;

  // Asks the monitor to stop the workload: the file `cancel`, then SIGTERM (to the monitor
  // only once it is known to be the same process).
  void cancel(Filesystem& fs);

  // The output from `from` while the workload runs; nothing when there is no live tail
  // (not started yet, or ended: then the exit record's layout says where it is).
  std::optional<LogChunk> read_log(const std::filesystem::path& log_file, std::uint64_t from, std::size_t max) const;

  // The monitor's pid (0 for a unit that has not said yet) and the unit, if any.
  pid_t pid() const;
  const std::string& unit() const { return unit_; }
  const std::filesystem::path& dir() const { return dir_; }

  // How long a monitor started as a unit may take to record its start.
  static constexpr auto kStartLimit = std::chrono::seconds(30);

 private:
  Run(std::filesystem::path dir, std::unique_ptr<Process> child, std::optional<MonitorInfo> info, std::string unit = {})
      : dir_(std::move(dir)), child_(std::move(child)), info_(std::move(info)), unit_(std::move(unit)) {}
  boost::asio::awaitable<bool> ended_by_pidfd(boost::asio::any_io_executor ex);
  // A unit's monitor: until it has written monitor.json (or exit.json, or the limit passed).
  boost::asio::awaitable<void> until_known(Clock& clock, Filesystem& fs);

  std::filesystem::path dir_;
  std::shared_ptr<Process> child_;  // started by this agent: its exit is reaped here
  std::optional<MonitorInfo> info_;  // taken back, or a unit that has started: who it is
  std::string unit_;                 // started as this transient unit
  bool cancel_asked_ = false;        // passed on once the monitor's pid is known
};

}  // namespace instanced::monitor
