// What setup scripts and jobs both do with a child process: read its output into a
// capped log, wait for its exit with a limit, and stop reading once it has ended (a
// daemon it started may hold the pipe open for ever).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <functional>
#include <optional>
#include <string_view>

#include "common/blocking_pool.hpp"
#include "common/clock.hpp"
#include "common/gate.hpp"
#include "common/log.hpp"
#include "common/process.hpp"
#include "common/run_log.hpp"

namespace instanced {

// Reads the child's output into `log` until it ends or the pipe is closed; then opens `done`.
boost::asio::awaitable<void> pump_output(Process& p, RunLog& log, Gate& done);

// The exit status if the process ends within `d` (or ended meanwhile), else nothing.
boost::asio::awaitable<std::optional<ExitStatus>> exit_within(Process& p, Clock& clock, Clock::steady_time::duration d);

// After the child has ended: waits up to `grace` for its output to end (`pump_done`), then
// closes the agent's end of the pipe.
boost::asio::awaitable<void> finish_output(Process& p, Gate& pump_done, Clock& clock, Clock::steady_time::duration grace);

// The processes (other than the agent) whose environment holds `marker` ("NAME=value"):
// what a script or job started, also those that left its process group. Read from /proc
// on the pool, bounded: /proc can block on a process stuck in the kernel.
boost::asio::awaitable<Result<std::vector<pid_t>>> find_marked(ProcessRunner& runner, BlockingPool& pool,
                                                               std::string marker);

// Stops every process holding `marker`: SIGTERM, then SIGKILL to what is left after
// `grace`. The processes found at first; none when /proc could not be read (logged).
boost::asio::awaitable<std::vector<pid_t>> stop_marked(ProcessRunner& runner, BlockingPool& pool, Clock& clock,
                                                       const Logger& log, std::string marker,
                                                       Clock::steady_time::duration grace);

// A short-lived tool (systemctl, podman inspect, wall): its exit status and the first
// `max_output` bytes of its stdout and stderr together.
struct CommandOutput {
  ExitStatus status;
  std::string output;
  // The output's last non-empty line, trimmed: what a tool says when it fails.
  std::string last_line() const;
};

// Runs `spec` to its end. An error only when it could not be started or did not end
// within `timeout` (then its process group is killed): "NAME ARG1: no answer within 5s".
boost::asio::awaitable<Result<CommandOutput>> run_command(ProcessRunner& runner, Clock& clock, SpawnSpec spec,
                                                         Clock::steady_time::duration timeout,
                                                         std::size_t max_output = 64 << 10);

// As run_command, the output handed to `sink` as it comes instead of kept.
boost::asio::awaitable<Result<ExitStatus>> run_command_into(ProcessRunner& runner, Clock& clock, SpawnSpec spec,
                                                            Clock::steady_time::duration timeout,
                                                            std::function<void(std::string_view)> sink);

// "NAME ARG1" of a command line, for messages.
std::string command_label(const std::vector<std::string>& argv);

}  // namespace instanced
