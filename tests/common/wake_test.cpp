// LoopLock (common/wake.hpp) on a real io_context: one holder at a time through a section
// that awaits, the others in turn; a holder unwound by a cancellation ends its turn, and a
// waiter cancelled while it waits never takes one.
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <string>
#include <vector>

#include "common/wake.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

// Holds the turn across a few turns of the loop, saying when it began and ended.
asio::awaitable<void> section(LoopLock& lock, std::vector<std::string>& seen, std::string name) {
  auto turn = co_await lock.acquire();
  seen.push_back(name + " in");
  for (int i = 0; i < 3; ++i) co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  seen.push_back(name + " out");
}

// Runs every handler that is ready, without waiting for a timer: the loop has settled.
void settle(asio::io_context& ioc) {
  while (ioc.poll() > 0) {
  }
}

asio::awaitable<void> take(LoopLock& lock, LoopLock::Held& out) { out = co_await lock.acquire(); }

asio::awaitable<void> hold_forever(LoopLock& lock, std::vector<std::string>& seen) {
  auto turn = co_await lock.acquire();
  seen.emplace_back("holder in");
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  co_await t.async_wait(asio::use_awaitable);  // throws operation_aborted when cancelled
}

}  // namespace

TEST_CASE("LoopLock: one holder at a time, the others in turn", "[wake]") {
  asio::io_context ioc;
  LoopLock lock(ioc.get_executor());
  std::vector<std::string> seen;
  for (const char* name : {"a", "b", "c"}) asio::co_spawn(ioc, section(lock, seen, name), asio::detached);
  ioc.run();
  CHECK(seen == std::vector<std::string>{"a in", "a out", "b in", "b out", "c in", "c out"});
  CHECK_FALSE(lock.held());
}

TEST_CASE("LoopLock: a holder cancelled ends its turn, a waiter cancelled never takes one", "[wake]") {
  asio::io_context ioc;
  LoopLock lock(ioc.get_executor());
  std::vector<std::string> seen;
  asio::cancellation_signal stop_holder, stop_waiter;
  int aborted = 0;
  auto count_abort = [&](std::exception_ptr e) {
    if (e) ++aborted;
  };
  asio::co_spawn(ioc, hold_forever(lock, seen), asio::bind_cancellation_slot(stop_holder.slot(), count_abort));
  asio::co_spawn(ioc, section(lock, seen, "cancelled"), asio::bind_cancellation_slot(stop_waiter.slot(), count_abort));
  asio::co_spawn(ioc, section(lock, seen, "next"), asio::detached);
  settle(ioc);  // the holder holds, both others wait
  CHECK(seen == std::vector<std::string>{"holder in"});
  CHECK(lock.held());
  stop_waiter.emit(asio::cancellation_type::terminal);
  settle(ioc);
  CHECK(aborted == 1);
  CHECK(lock.held());  // still the holder's
  stop_holder.emit(asio::cancellation_type::terminal);
  ioc.run();
  CHECK(aborted == 2);
  CHECK(seen == std::vector<std::string>{"holder in", "next in", "next out"});
  CHECK_FALSE(lock.held());
}

// A coroutine left on the loop when the agent exits is destroyed after the subsystem that
// owned the lock: its turn's end must touch nothing (ASan, which runs this suite, would
// report a use after free).
TEST_CASE("LoopLock: a turn that outlives its lock touches nothing when it ends", "[wake]") {
  asio::io_context ioc;
  LoopLock::Held held;
  {
    LoopLock lock(ioc.get_executor());
    asio::co_spawn(ioc, take(lock, held), asio::detached);
    settle(ioc);
    REQUIRE(lock.held());
  }
  held.release();
}
