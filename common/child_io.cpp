#include "common/child_io.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <csignal>
#include <filesystem>
#include <fmt/format.h>
#include "common/coro.hpp"
#include "common/units.hpp"
#include <span>
#include <variant>
#include <vector>

namespace instanced {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {
constexpr auto kFindTimeout = std::chrono::seconds(10);  // a /proc scan
}  // namespace

asio::awaitable<void> pump_output(Process& p, RunLog& log, Gate& done) {
  std::vector<char> buf(64 * 1024);
  try {
    for (;;) {
      std::size_t n = co_await p.read_output(std::span<char>(buf));
      if (n == 0) break;
      log.feed(std::string_view(buf.data(), n));
    }
  } catch (const boost::system::system_error&) {
    // Closed by finish_output() after its grace, or the agent is stopping.
  }
  done.open();
}

asio::awaitable<std::optional<ExitStatus>> exit_within(Process& p, Clock& clock, Clock::steady_time::duration d) {
  auto exit = p.wait();
  auto limit = clock.sleep_for(d);
  auto either = std::move(exit) || std::move(limit);
  auto r = co_await first_error(std::move(either));
  if (r.index() == 0) co_return std::get<0>(r);
  co_return p.exit_status();  // reaped right at the deadline: ended, not timed out
}

asio::awaitable<void> finish_output(Process& p, Gate& pump_done, Clock& clock, Clock::steady_time::duration grace) {
  if (!pump_done.is_open()) {
    auto drained = pump_done.wait();
    auto limit = clock.sleep_for(grace);
    auto either = std::move(drained) || std::move(limit);
    co_await first_error(std::move(either));
  }
  p.close_output();
}

asio::awaitable<Result<std::vector<pid_t>>> find_marked(ProcessRunner& runner, BlockingPool& pool, std::string marker) {
  // (GCC 12: no temporaries with destructors inside a co_await expression; named locals.)
  const std::string what = "finding the processes marked " + marker;
  auto find = [&runner, marker] { return runner.find_marked(marker); };
  co_return co_await pool.run(what, kFindTimeout, find);
}

asio::awaitable<std::vector<pid_t>> stop_marked(ProcessRunner& runner, BlockingPool& pool, Clock& clock,
                                                const Logger& log, std::string marker,
                                                Clock::steady_time::duration grace) {
  auto found = co_await find_marked(runner, pool, marker);
  if (!found) {
    log->warn("{}", found.error().message);
    co_return std::vector<pid_t>{};
  }
  if (found->empty()) co_return *found;
  for (pid_t p : *found) runner.signal(p, SIGTERM);
  const auto deadline = clock.now() + grace;
  for (;;) {
    co_await clock.sleep_for(std::chrono::milliseconds(50));
    auto left = co_await find_marked(runner, pool, marker);
    if (!left || left->empty()) break;
    if (clock.now() >= deadline) {
      for (pid_t p : *left) runner.signal(p, SIGKILL);
      break;
    }
  }
  co_return *found;
}

std::string CommandOutput::last_line() const {
  std::string last = output;
  while (!last.empty() && (last.back() == '\n' || last.back() == ' ' || last.back() == '\r')) last.pop_back();
  if (auto nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
  return last;
}

std::string command_label(const std::vector<std::string>& argv) {
  if (argv.empty()) return "(nothing)";
  std::string name = std::filesystem::path(argv[0]).filename().string();
  return argv.size() > 1 ? fmt::format("{} {}", name, argv[1]) : name;
}

asio::awaitable<Result<ExitStatus>> run_command_into(ProcessRunner& runner, Clock& clock, SpawnSpec spec,
                                                     Clock::steady_time::duration timeout,
                                                     std::function<void(std::string_view)> sink) {
  spec.capture_output = true;
  auto spawned = runner.spawn(spec);
  if (!spawned) co_return spawned.error();
  Process& p = **spawned;
  std::vector<char> buf(64 * 1024);
  auto read_all = [&]() -> asio::awaitable<void> {
    try {
      for (;;) {
        std::size_t n = co_await p.read_output(std::span<char>(buf));
        if (n == 0) break;
        sink(std::string_view(buf.data(), n));
      }
    } catch (const boost::system::system_error& e) {
      if (is_cancelled(e)) throw;  // cancelled: not the end of the output
    }
  };
  auto reading = read_all();
  auto limit = clock.sleep_for(timeout);
  auto either = std::move(reading) || std::move(limit);
  std::variant<std::monostate, std::monostate> r;
  std::exception_ptr cancelled;
  try {
    r = co_await first_error(std::move(either));
  } catch (...) {
    cancelled = std::current_exception();
  }
  // Cancelled (the agent is stopping) or out of time: the tool does not outlive the call.
  if (cancelled || r.index() == 1) p.signal_group(SIGKILL);
  if (cancelled) std::rethrow_exception(cancelled);
  ExitStatus status = co_await p.wait();
  if (r.index() == 1) co_return Error{fmt::format("{}: no answer within {}", command_label(spec.argv), format_duration(std::chrono::duration_cast<Duration>(timeout)))};
  co_return status;
}

asio::awaitable<Result<CommandOutput>> run_command(ProcessRunner& runner, Clock& clock, SpawnSpec spec,
                                                   Clock::steady_time::duration timeout, std::size_t max_output) {
  CommandOutput out;
  auto keep = [&out, max_output](std::string_view bytes) {
    if (out.output.size() < max_output) out.output.append(bytes.substr(0, max_output - out.output.size()));
  };
  auto running = run_command_into(runner, clock, std::move(spec), timeout, keep);
  auto status = co_await std::move(running);
  if (!status) co_return status.error();
  out.status = *status;
  co_return out;
}

}  // namespace instanced
