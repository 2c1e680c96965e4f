#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <catch2/catch.hpp>
#include <atomic>
#include <filesystem>
#include <thread>

#include "common/single_flight.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

std::size_t threads_now() {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/proc/self/task")) {
    (void)e;
    ++n;
  }
  return n;
}

}  // namespace

// A call that never returns (until the test lets it) stands for a stat on a hung mount.
TEST_CASE("a blocked call costs one thread: later calls are refused at once until it returns", "[single_flight]") {
  asio::io_context ioc;
  SingleFlight flight(ioc.get_executor());
  auto release = std::make_shared<std::atomic<bool>>(false);
  std::vector<Result<int>> got;
  std::vector<double> took_ms;
  std::size_t threads_during = 0;
  // A first thread started and joined: ThreadSanitizer starts a background thread of its
  // own at the first pthread_create, which is not the flight's.
  std::thread([] {}).join();
  const std::size_t threads_before = threads_now();
  auto task = [&]() -> asio::awaitable<void> {
    auto hang = [release] {
      while (!release->load()) std::this_thread::sleep_for(1ms);
      return 1;
    };
    auto quick = [] { return 2; };
    const std::string what = "probe of /mnt/hung";
    got.push_back(co_await flight.run(what, 50ms, hang));
    for (int i = 0; i < 5; ++i) {
      auto t0 = std::chrono::steady_clock::now();
      got.push_back(co_await flight.run(what, 50ms, quick));
      took_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    threads_during = threads_now();
    release->store(true);
    while (flight.busy()) {
      asio::steady_timer t(co_await asio::this_coro::executor, 1ms);
      co_await t.async_wait(asio::use_awaitable);
    }
    got.push_back(co_await flight.run(what, 1s, quick));
  };
  asio::co_spawn(ioc, task(), asio::detached);
  ioc.run();
  REQUIRE(got.size() == 7);
  REQUIRE_FALSE(got[0]);
  CHECK(got[0].error().message == "probe of /mnt/hung timed out after 50ms");
  for (int i = 1; i <= 5; ++i) {
    REQUIRE_FALSE(got[i]);
    CHECK_THAT(got[i].error().message, Catch::StartsWith("probe of /mnt/hung: the previous call is still blocked after"));
    CHECK(took_ms[i - 1] < 20);  // answered at once, not after the timeout
  }
  CHECK(threads_during == threads_before + 1);  // the blocked call's thread, and no other
  REQUIRE(got[6]);
  CHECK(*got[6] == 2);
  CHECK(flight.timeouts() == 1);
}

TEST_CASE("a flight destroyed while its call is blocked lets the call finish without touching it",
          "[single_flight]") {
  auto release = std::make_shared<std::atomic<bool>>(false);
  auto finished = std::make_shared<std::atomic<bool>>(false);
  {
    asio::io_context ioc;
    auto flight = std::make_unique<SingleFlight>(ioc.get_executor());
    std::optional<Result<int>> got;
    auto task = [&]() -> asio::awaitable<void> {
      auto hang = [release, finished] {
        while (!release->load()) std::this_thread::sleep_for(1ms);
        finished->store(true);
        return 1;
      };
      const std::string what = "x";
      got = co_await flight->run(what, 20ms, hang);
    };
    asio::co_spawn(ioc, task(), asio::detached);
    ioc.run();
    REQUIRE(got);
    CHECK_FALSE(*got);
    flight.reset();
  }  // the loop is gone too
  release->store(true);
  CHECK(testing::eventually([&] { return finished->load(); }));
}
