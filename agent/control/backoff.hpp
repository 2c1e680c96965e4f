// The channel's timing. Reconnect delays: exponential with full jitter (a uniform draw between 0 and
// min(max, initial * 2^attempt)), as AWS's architecture blog recommends for fleets.
#pragma once

#include <cstdint>
#include <random>

#include <algorithm>
#include <chrono>

#include "common/clock.hpp"
#include "common/units.hpp"

namespace instanced::control {

class Backoff {
 public:
  Backoff(Duration initial, Duration max, std::uint64_t seed) : initial_(initial), max_(max), rng_(seed) {}
  Duration next() {
    Duration cap = max_;
    if (attempt_ < 40) {
      auto scaled = initial_ * (std::int64_t{1} << attempt_);
      if (scaled < cap && scaled.count() > 0) cap = scaled;
    }
    ++attempt_;
    return draw(cap);
  }
  // A uniform draw from [0, max], from the same generator.
  Duration draw(Duration max) {
    std::uniform_int_distribution<std::int64_t> d(0, max.count());
    return Duration(d(rng_));
  }
  void reset() { attempt_ = 0; }

 private:
  Duration initial_, max_;
  std::mt19937_64 rng_;
  unsigned attempt_ = 0;
};

// Timer coalescing (as the kernel's timer slack and systemd's AccuracySec): a heartbeat
// is due at the next multiple of a grid of a tenth of its interval (at most 100 ms) after
// its interval, so that work due at about the same time shares one wake-up of the loop:
// in a process holding many sessions (bench/fleet), ~100 heartbeats a wake-up instead of
// one. The control plane sees the same mean interval, off by less than the grid.
inline Clock::steady_time coalesced(Clock::steady_time due, Clock::steady_time::duration interval) {
  using namespace std::chrono;
  const auto grid = std::min<Clock::steady_time::duration>(milliseconds(100), interval / 10);
  if (grid <= Clock::steady_time::duration::zero()) return due;
  const auto since = due.time_since_epoch();
  const auto rem = since % grid;
  return rem == Clock::steady_time::duration::zero() ? due : due + (grid - rem);
}

}  // namespace instanced::control
