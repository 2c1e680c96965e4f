// The daemon restarts a subsystem that fails, with pauses that double, under a simulated
// clock; a stop during the pause ends it. A real io_context, the real Daemon, SIGTERM raised
// in the process (the daemon's own signal_set takes it).
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <functional>

#include "agent/daemon/daemon.hpp"
#include "tests/fakes/fake_clock.hpp"
#include "tests/fakes/fake_notifier.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// Fails on its first `failures` runs, then runs until cancelled.
class Flaky final : public Subsystem {
 public:
  explicit Flaky(int failures) : failures_(failures) {}
  std::string name() const override { return "flaky"; }
  asio::awaitable<void> run() override {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    if (++runs <= failures_) throw std::runtime_error("boom " + std::to_string(runs));
    asio::steady_timer forever(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
    co_await forever.async_wait(asio::use_awaitable);
  }
  int runs = 0;

 private:
  int failures_;
};

// Runs `step` on the loop every millisecond (real time) until it returns true. A function,
// not a lambda: a coroutine's parameters live in its frame, a lambda's captures do not.
asio::awaitable<void> every_ms(std::function<bool()> step) {
  asio::steady_timer t(co_await asio::this_coro::executor);
  while (!step()) {
    t.expires_after(1ms);
    co_await t.async_wait(asio::use_awaitable);
  }
}

}  // namespace

TEST_CASE("a failed subsystem is restarted with doubling pauses, and its restarts are shown and counted",
          "[daemon][restart][simulated]") {
  asio::io_context ioc(1);
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::FakeNotifier notifier;
  BlockingPool pool(1);
  Logging logging(LogTarget::stderr_lines, LogLevel::error);
  StateRegistry state(clock);
  Api api{clock, fs, notifier, pool, state, logging};
  testing::TempDir dir;
  LoadedConfig loaded;
  loaded.config.state_dir = (dir / "state").string();
  loaded.hash = std::string(64, 'a');
  status::AgentInfo info;
  Daemon daemon(ioc, api, Options{}, loaded, info);
  Flaky flaky(2);
  daemon.add(flaky);

  // The script of the test, one step at a time, each once its condition holds.
  int step = 0;
  std::vector<std::string> seen;
  std::function<bool()> script = [&] {
    switch (step) {
      case 0:  // the first failure: a pause of 1 s starts
        if (flaky.runs != 1 || clock.sleepers() != 1) return false;
        seen.push_back(state.subsystems().at("flaky").summary);
        clock.advance(999ms);
        ++step;
        return false;
      case 1:  // not yet
        if (flaky.runs != 1) seen.push_back("restarted early");
        clock.advance(1ms);
        ++step;
        return false;
      case 2:  // the second failure: now 2 s
        if (flaky.runs != 2 || clock.sleepers() != 1) return false;
        seen.push_back(state.subsystems().at("flaky").summary);
        clock.advance(1999ms);
        ++step;
        return false;
      case 3:
        if (flaky.runs != 2) seen.push_back("restarted early");
        clock.advance(1ms);
        ++step;
        return false;
      case 4:  // runs for good; the agent is stopped
        if (flaky.runs != 3) return false;
        ::raise(SIGTERM);
        return true;
    }
    return true;
  };
  asio::co_spawn(ioc, every_ms(script), asio::detached);
  const int code = daemon.run();
  CHECK(code == 0);
  CHECK(flaky.runs == 3);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == "failed: boom 1; restarting in 1s (restart 1)");
  CHECK(seen[1] == "failed: boom 2; restarting in 2s (restart 2)");
  CHECK(info.restarts.at("flaky") == 2);
  CHECK(state.metrics().value("instanced_subsystem_restarts_total", {{"subsystem", "flaky"}}) == 2);
  int restarting = 0;
  for (const auto& e : state.events()) restarting += e.type == "subsystem_restarting";
  CHECK(restarting == 2);
}
