// The states of a watched path and the hysteresis between them, free of I/O: a statvfs
// sample and the time in, the state out. Entering a worse state is immediate; leaving it
// needs free space (and inodes) above the threshold plus a margin, continuously for a hold
// time, so a path hovering at a threshold does not flap (kubelet's eviction manager does
// the same with its minimum reclaim and transition period).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "common/clock.hpp"
#include "agent/disk/config.hpp"
#include "common/fs.hpp"

namespace instanced::disk {

enum class Level { ok, low, recovery_required };
std::string_view to_string(Level l);

// The numbers a level is decided on, for one path.
struct Limits {
  std::uint64_t low_bytes = 0;
  std::uint64_t recovery_bytes = 0;  // 0: no recovery rule on this path
  std::uint64_t low_inodes = 0;
  std::uint64_t recovery_inodes = 0;
};
Limits limits_for(const WatchedPath& p, const FsUsage& u);

// The level a sample is at; with `margin`, the level it is at counting only space above
// threshold + margin (and inodes above threshold + 1 %), the test for leaving a level.
Level classify(const FsUsage& u, const Limits& l, std::uint64_t margin_bytes = 0, std::uint64_t margin_inodes = 0);

class Hysteresis {
 public:
  Hysteresis(std::uint64_t margin_bytes, Clock::steady_time::duration hold) : margin_(margin_bytes), hold_(hold) {}
  void set(std::uint64_t margin_bytes, Clock::steady_time::duration hold) { margin_ = margin_bytes, hold_ = hold; }

  // Feeds one sample taken at `now`; returns the level after it.
  Level update(const FsUsage& u, const Limits& l, Clock::steady_time now);
  Level level() const { return level_; }
  // Since when the sample has been good enough to leave the current level, if it is.
  std::optional<Clock::steady_time> better_since() const { return better_since_; }

 private:
  std::uint64_t margin_;
  Clock::steady_time::duration hold_;
  Level level_ = Level::ok;
  std::optional<Clock::steady_time> better_since_;
};

// Bytes to free on a path in recovery_required so that it leaves it: up to the recovery
// threshold plus the margin.
std::uint64_t bytes_to_leave_recovery(const FsUsage& u, const Limits& l, std::uint64_t margin_bytes);

}  // namespace instanced::disk
