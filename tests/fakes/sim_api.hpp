// The Api a subsystem is built on in a test: a simulated clock, an in-memory file system, a
// recording notifier, a real blocking pool and state registry, on the test's io_context.
// The test runs the loop itself and moves time forward: a subsystem's rounds are seen one
// by one, and "it did not happen" is checked after the simulated time in which it would have.
#pragma once

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <functional>

#include "common/api.hpp"
#include "tests/fakes/fake_clock.hpp"
#include "tests/fakes/fake_fs.hpp"
#include "tests/fakes/fake_notifier.hpp"

namespace instanced::testing {

struct SimApi {
  SimApi() : state(clock), api{clock, fs, notifier, pool, state, logging} {}

  // Runs the loop until `pred` holds. Real time passes only for the blocking pool's work;
  // the limit is there for a failing test, not for pacing.
  bool run_until(const std::function<bool()>& pred) {
    const auto limit = std::chrono::steady_clock::now() + std::chrono::seconds(30);
    while (std::chrono::steady_clock::now() < limit) {
      ioc.run_for(std::chrono::milliseconds(2));
      if (pred()) return true;
    }
    return false;
  }

  // Runs a subsystem's run() on the loop until stop_and_wait().
  void start(boost::asio::awaitable<void> run) {
    boost::asio::co_spawn(ioc, std::move(run),
                          boost::asio::bind_cancellation_slot(stop_.slot(), [this](std::exception_ptr) { ended_ = true; }));
  }
  // The agent's stop: the subsystem is cancelled and its run() awaited. Call it before the
  // subsystem goes.
  void stop_and_wait() {
    stop_.emit(boost::asio::cancellation_type::terminal);
    run_until([this] { return ended_; });
  }

  boost::asio::io_context ioc{1};
  FakeClock clock;
  FakeFilesystem fs;
  FakeNotifier notifier;
  BlockingPool pool{1};
  Logging logging{LogTarget::stderr_lines, LogLevel::error};
  StateRegistry state;
  Api api;

 private:
  boost::asio::cancellation_signal stop_;
  bool ended_ = false;
};

}  // namespace instanced::testing
