// The channel's timing: reconnect backoff and the heartbeat's coalescing grid.
#include <catch2/catch.hpp>

#include "agent/control/backoff.hpp"

using namespace instanced;
using namespace instanced::control;
using namespace std::chrono_literals;

TEST_CASE("a heartbeat is due on a grid of a tenth of its interval, at most 100 ms", "[control][timing]") {
  auto at = [](std::chrono::milliseconds ms) { return Clock::steady_time(ms); };
  // 10 s interval: a 100 ms grid; a due time on the grid stays, any other moves up to it.
  CHECK(coalesced(at(20000ms), 10s) == at(20000ms));
  CHECK(coalesced(at(20001ms), 10s) == at(20100ms));
  CHECK(coalesced(at(20099ms), 10s) == at(20100ms));
  // Never early, never later than the grid.
  for (long ms = 123456; ms < 123456 + 1000; ms += 7) {
    auto due = at(std::chrono::milliseconds(ms));
    auto c = coalesced(due, 10s);
    CHECK(c >= due);
    CHECK(c - due < 100ms);
  }
  // 200 ms interval (the tests'): a 20 ms grid.
  CHECK(coalesced(at(1005ms), 200ms) == at(1020ms));
  // Sessions due within the same grid step share the same instant: one wake-up.
  CHECK(coalesced(at(5010ms), 10s) == coalesced(at(5090ms), 10s));
}

TEST_CASE("reconnect backoff doubles to its cap, with full jitter", "[control][timing]") {
  Backoff b(1000ms, 8000ms, 42);
  for (int attempt = 0; attempt < 8; ++attempt) {
    auto cap = std::min<Duration>(8000ms, Duration(1000 << std::min(attempt, 10)));
    auto d = b.next();
    CHECK(d >= Duration::zero());
    CHECK(d <= cap);
  }
  b.reset();
  CHECK(b.next() <= 1000ms);
}
