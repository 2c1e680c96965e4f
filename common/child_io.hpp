// What setup scripts and jobs both do with a child process: read its output into a
// capped log, wait for its exit with a limit, and stop reading once it has ended (a
// daemon it started may hold the pipe open for ever).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <optional>

#include "common/clock.hpp"
#include "common/gate.hpp"
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

}  // namespace instanced
