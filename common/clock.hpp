// Time behind an interface, so backoff, probe intervals and timeouts are tested under a
// simulated clock (tests/fakes/fake_clock.hpp) instead of with sleeps.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>

namespace instanced {

class Clock {
 public:
  using steady_time = std::chrono::steady_clock::time_point;
  using wall_time = std::chrono::system_clock::time_point;

  virtual ~Clock() = default;
  virtual steady_time now() const = 0;
  virtual wall_time wall_now() const = 0;
  // Suspends the calling coroutine until `deadline`. Throws boost::system::system_error
  // (operation_aborted) when the coroutine is cancelled first.
  virtual boost::asio::awaitable<void> sleep_until(steady_time deadline) = 0;

  boost::asio::awaitable<void> sleep_for(std::chrono::steady_clock::duration d) {
    return sleep_until(now() + d);
  }
};

class RealClock final : public Clock {
 public:
  steady_time now() const override { return std::chrono::steady_clock::now(); }
  wall_time wall_now() const override { return std::chrono::system_clock::now(); }
  boost::asio::awaitable<void> sleep_until(steady_time deadline) override;
};

}  // namespace instanced

#include <string>

namespace instanced {
// "2026-11-27T11:28:20.123Z"
std::string iso8601(Clock::wall_time t);
}  // namespace instanced

#include <optional>

namespace instanced {
// Parses "2026-11-27T11:28:20Z" or "2026-11-27T11:28:20.123Z" (UTC only).
std::optional<Clock::wall_time> parse_iso8601(std::string_view text);
}  // namespace instanced
