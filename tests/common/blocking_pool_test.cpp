#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <atomic>
#include <thread>

#include "common/blocking_pool.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

// The coroutine lambdas are named locals: a lambda coroutine reads its captures through
// the closure object, which must outlive the coroutine (a temporary would not).
TEST_CASE("blocking work runs off the loop and is bounded by a timeout", "[pool]") {
  asio::io_context ioc;
  BlockingPool pool(2);
  const auto loop_thread = std::this_thread::get_id();

  SECTION("a result comes back") {
    std::optional<Result<int>> got;
    std::thread::id ran_on;
    auto task0 = [&]() -> asio::awaitable<void> {
      got = co_await pool.run("add", 1s, [&] { ran_on = std::this_thread::get_id(); return 40 + 2; });
    };
    asio::co_spawn(ioc, task0(), asio::detached);
    ioc.run();
    REQUIRE(got);
    REQUIRE(got->ok());
    CHECK(**got == 42);
    CHECK(ran_on != loop_thread);
  }

  SECTION("a Result-returning call is not wrapped twice, and its error passes through") {
    std::optional<Result<int>> got;
    auto task1 = [&]() -> asio::awaitable<void> {
      got = co_await pool.run("fail", 1s, []() -> Result<int> { return Error{"statvfs /x: No such file"}; });
    };
    asio::co_spawn(ioc, task1(), asio::detached);
    ioc.run();
    REQUIRE(got);
    CHECK(got->error().message == "statvfs /x: No such file");
  }

  SECTION("a hung call times out while the loop keeps running") {
    auto release = std::make_shared<std::atomic<bool>>(false);
    std::optional<Result<int>> got;
    int ticks = 0;
    auto task2 = [&]() -> asio::awaitable<void> {
      // A named callable: see the GCC 12 note in docs/architecture.md.
      auto hang = [release] {
        while (!release->load()) std::this_thread::sleep_for(1ms);
        return 1;
      };
      got = co_await pool.run("stat /mnt/hung", 100ms, hang);
    };
    asio::co_spawn(ioc, task2(), asio::detached);
    auto task3 = [&]() -> asio::awaitable<void> {
      asio::steady_timer t(co_await asio::this_coro::executor);
      for (int i = 0; i < 5; ++i) {
        t.expires_after(10ms);
        co_await t.async_wait(asio::use_awaitable);
        ++ticks;
      }
    };
    asio::co_spawn(ioc, task3(), asio::detached);
    ioc.run();
    REQUIRE(got);
    REQUIRE_FALSE(got->ok());
    CHECK(got->error().message == "stat /mnt/hung timed out after 100ms");
    CHECK(ticks == 5);
    CHECK(pool.timeouts() == 1);
    CHECK(pool.busy() == 1);
    release->store(true);
  }

  SECTION("an exception in the call reaches the awaiting coroutine") {
    std::string what;
    auto task4 = [&]() -> asio::awaitable<void> {
      try {
        (void)co_await pool.run("throw", 1s, []() -> int { throw std::runtime_error("boom"); });
      } catch (const std::runtime_error& e) {
        what = e.what();
      }
    };
    asio::co_spawn(ioc, task4(), asio::detached);
    ioc.run();
    CHECK(what == "boom");
  }
}
