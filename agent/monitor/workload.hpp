// What the agent and a workload's monitor (instanced-run, docs/monitor.md) share: the files
// of one run folder. The agent writes spec.json and starts the monitor on the folder; the
// monitor starts the workload, writes monitor.json, keeps the output's tail in live.ring
// while the workload runs, and writes exit.json before it exits. A cancel is the file
// `cancel` and a SIGTERM to the monitor. Nothing else passes between them, so the agent
// can stop, crash or be upgraded while the workload runs, and take it back when it starts.
//
// I/O-free apart from the /proc reads of process_start_ticks: the files are parsed and
// written here, read and written by the callers through their Filesystem.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <sys/types.h>
#include <vector>

#include "common/clock.hpp"
#include "common/process.hpp"
#include "common/result.hpp"
#include "common/run_log.hpp"
#include "common/units.hpp"

namespace instanced::monitor {

inline constexpr std::string_view kSpecFile = "spec.json";
inline constexpr std::string_view kMonitorFile = "monitor.json";
inline constexpr std::string_view kExitFile = "exit.json";
inline constexpr std::string_view kLiveTailFile = "live.ring";
inline constexpr std::string_view kCancelFile = "cancel";
inline constexpr std::string_view kProgram = "instanced-run";
// `instanced-run --spare`: started ahead, its run folder comes as a line on its fd 3, and
// it answers with kSpareTaken once it has taken it (a spare that ends instead never runs
// it), then with kSpareSpawned once it has spawned the workload (or failed to), and closes
// fd 3. The agent starts the next spare only then: on a small machine the next spare's
// start would otherwise take a CPU from the job's.
inline constexpr std::string_view kSpareArgument = "--spare";
inline constexpr char kSpareTaken = '1';
inline constexpr char kSpareSpawned = '2';

// What to run and how: written by the agent (mode 0600: the environment may hold secrets).
struct WorkloadSpec {
  std::string name;   // "job j1", for messages
  SpawnSpec spawn;    // its output is always captured; inherit_fd is not used
  Duration timeout{};  // from `started`; zero: none
  Duration kill_grace = std::chrono::seconds(10);  // between SIGTERM and SIGKILL
  Clock::wall_time started{};
  std::string log_file;  // the run log (RunLog's rules)
  std::uint64_t max_log_bytes = 0;
  std::size_t tail_lines = 0;
  bool journal = false;  // the monitor logs to the journal (as the agent does), else nowhere
  std::string journal_identifier;  // the output's lines in the journal (none: not sent): SYSLOG_IDENTIFIER
  std::string journal_field;       // and this field ("INSTANCED_JOB")
  std::string journal_value;       // with this value
  std::string marker;  // "NAME=value" in the environment of what the workload leaves behind: stopped with it
  // What it leaves behind runs on after it has ended by itself (setup's `leftover_processes:
  // keep`); after a timeout or a cancel it is stopped all the same.
  bool keep_left_behind = false;
  // An inline script: given to the workload as its fd 3, in a sealed memfd the monitor
  // makes, so that it is never a file other users could read (setup's `content`).
  std::string inline_script;
  // The monitor runs in a control group of its own (a unit): an OOM kill counted there
  // while the workload ran was the workload's, at the unit's memory limit.
  bool own_cgroup = false;

  std::string to_text() const;
  static Result<WorkloadSpec> parse(std::string_view text);
};

// Who the monitor is: written once the workload runs.
struct MonitorInfo {
  pid_t pid = 0;
  std::uint64_t start_ticks = 0;  // /proc/PID/stat's start time: a reused pid is not it
  pid_t child = 0;
  Clock::wall_time started{};

  std::string to_text() const;
  static Result<MonitorInfo> parse(std::string_view text);
};

enum class Outcome { exited, timed_out, cancelled, not_started };
std::string_view to_string(Outcome o);

// How the workload ended: written atomically before the monitor exits.
struct WorkloadExit {
  Outcome outcome = Outcome::exited;
  ExitStatus status;          // exited, timed_out, cancelled: how the process ended
  Clock::wall_time ended{};
  std::string reason;         // not_started: why ("cannot run /x: Permission denied (exec)")
  LogLayout layout;
  std::vector<std::string> tail;  // the output's last lines, escaped
  std::vector<pid_t> left_behind;  // processes it left that were stopped after it
  bool out_of_memory = false;      // the kernel's OOM killer ended a process of it (own_cgroup)

  std::string to_text() const;
  static Result<WorkloadExit> parse(std::string_view text);
};

// /proc/PID/stat's start time (clock ticks after boot), or nothing when there is no such
// process or it has exited (a zombie).
std::optional<std::uint64_t> process_start_ticks(pid_t pid);

// Whether the monitor `info` describes is still running (and not a reused pid).
bool monitor_running(const MonitorInfo& info);

}  // namespace instanced::monitor
