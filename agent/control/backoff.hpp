// Reconnect delays: exponential with full jitter (a uniform draw between 0 and
// min(max, initial * 2^attempt)), as AWS's architecture blog recommends for fleets.
#pragma once

#include <cstdint>
#include <random>

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

}  // namespace instanced::control
