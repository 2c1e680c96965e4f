#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "agent/daemon/watchdog.hpp"
#include "tests/fakes/fake_clock.hpp"
#include "tests/fakes/fake_notifier.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

TEST_CASE("the watchdog pings at half of WATCHDOG_USEC under simulated time", "[daemon][watchdog]") {
  asio::io_context ioc;
  testing::FakeClock clock;
  testing::FakeNotifier notifier;
  asio::cancellation_signal stop;
  bool finished = false;
  asio::co_spawn(ioc, watchdog_loop(clock, notifier, 10s),
                 asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr) { finished = true; }));
  ioc.poll();
  CHECK(notifier.count("WATCHDOG=1") == 1);  // at once

  clock.advance(4999ms);
  ioc.poll();
  CHECK(notifier.count("WATCHDOG=1") == 1);
  clock.advance(1ms);
  ioc.poll();
  CHECK(notifier.count("WATCHDOG=1") == 2);
  clock.advance(5s);
  ioc.poll();
  CHECK(notifier.count("WATCHDOG=1") == 3);

  SECTION("after a long gap it pings once, not a burst, then keeps its rhythm") {
    clock.advance(60s);
    ioc.poll();
    CHECK(notifier.count("WATCHDOG=1") == 4);
    clock.advance(5s);
    ioc.poll();
    CHECK(notifier.count("WATCHDOG=1") == 5);
  }
  SECTION("cancellation ends it") {
    stop.emit(asio::cancellation_type::terminal);
    ioc.poll();
    CHECK(finished);
    CHECK(clock.sleepers() == 0);
  }
  stop.emit(asio::cancellation_type::terminal);
  ioc.poll();
}
