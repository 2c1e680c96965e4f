#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <future>
#include <thread>

#include "common/blocking_pool.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

TEST_CASE("blocking work runs off the loop and is bounded by a timeout", "[pool]") {
  asio::io_context ioc;
  BlockingPool pool(2);
  const auto loop_thread = std::this_thread::get_id();

  SECTION("a result comes back") {
    std::optional<Result<int>> got;
    std::thread::id ran_on;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
      got = co_await pool.run("add", 1s, [&] { ran_on = std::this_thread::get_id(); return 40 + 2; });
    }, asio::detached);
    ioc.run();
    REQUIRE(got);
    REQUIRE(got->ok());
    CHECK(**got == 42);
    CHECK(ran_on != loop_thread);
  }

  SECTION("a Result-returning call is not wrapped twice, and its error passes through") {
    std::optional<Result<int>> got;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
      got = co_await pool.run("fail", 1s, []() -> Result<int> { return Error{"statvfs /x: No such file"}; });
    }, asio::detached);
    ioc.run();
    REQUIRE(got);
    CHECK(got->error().message == "statvfs /x: No such file");
  }

  SECTION("a hung call times out while the loop keeps running") {
    std::promise<void> release;
    auto released = release.get_future().share();
    std::optional<Result<int>> got;
    int ticks = 0;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
      got = co_await pool.run("stat /mnt/hung", 100ms, [released] { released.wait(); return 1; });
    }, asio::detached);
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
      asio::steady_timer t(co_await asio::this_coro::executor);
      for (int i = 0; i < 5; ++i) {
        t.expires_after(10ms);
        co_await t.async_wait(asio::use_awaitable);
        ++ticks;
      }
    }, asio::detached);
    ioc.run();
    REQUIRE(got);
    REQUIRE_FALSE(got->ok());
    CHECK(got->error().message == "stat /mnt/hung timed out after 100ms");
    CHECK(ticks == 5);
    CHECK(pool.timeouts() == 1);
    CHECK(pool.busy() == 1);
    release.set_value();
  }

  SECTION("an exception in the call reaches the awaiting coroutine") {
    std::string what;
    asio::co_spawn(ioc, [&]() -> asio::awaitable<void> {
      try {
        co_await pool.run("throw", 1s, []() -> int { throw std::runtime_error("boom"); });
      } catch (const std::runtime_error& e) {
        what = e.what();
      }
    }, asio::detached);
    ioc.run();
    CHECK(what == "boom");
  }
}
