#include "agent/disk/levels.hpp"

#include <algorithm>

namespace instanced::disk {

std::string_view to_string(Level l) {
  switch (l) {
    case Level::ok: return "ok";
    case Level::low: return "low";
    case Level::recovery_required: return "recovery_required";
  }
  return "ok";
}

Limits limits_for(const WatchedPath& p, const FsUsage& u) {
  Limits l;
  l.low_bytes = p.low.of(u.total_bytes);
  l.recovery_bytes = p.recovery.of(u.total_bytes);
  l.low_inodes = p.inodes_low.of(u.total_inodes);
  // Inode exhaustion counts for the recovery rule only where the rule applies.
  l.recovery_inodes = l.recovery_bytes > 0 ? p.inodes_recovery.of(u.total_inodes) : 0;
  return l;
}

Level classify(const FsUsage& u, const Limits& l, std::uint64_t margin_bytes, std::uint64_t margin_inodes) {
  // File systems without inode accounting (btrfs, some FUSE) report 0 total inodes.
  const bool inodes = u.total_inodes > 0;
  auto below = [](std::uint64_t have, std::uint64_t limit, std::uint64_t margin) {
    return limit > 0 && have < limit + margin;
  };
  if (below(u.avail_bytes, l.recovery_bytes, margin_bytes) ||
      (inodes && below(u.avail_inodes, l.recovery_inodes, margin_inodes)))
    return Level::recovery_required;
  if (below(u.avail_bytes, l.low_bytes, margin_bytes) || (inodes && below(u.avail_inodes, l.low_inodes, margin_inodes)))
    return Level::low;
  return Level::ok;
}

Level Hysteresis::update(const FsUsage& u, const Limits& l, Clock::steady_time now) {
  const Level raw = classify(u, l);
  if (raw >= level_) {
    // Worse (or the same): at once, and any stretch of good samples is over.
    level_ = raw;
    better_since_.reset();
    return level_;
  }
  // Better: only counting what is above the thresholds plus the margin, for `hold`.
  const Level with_margin = classify(u, l, margin_, u.total_inodes / 100);
  if (with_margin >= level_) {
    better_since_.reset();
    return level_;
  }
  if (!better_since_) better_since_ = now;
  if (now - *better_since_ >= hold_) {
    level_ = with_margin;
    better_since_.reset();
  }
  return level_;
}

std::uint64_t bytes_to_leave_recovery(const FsUsage& u, const Limits& l, std::uint64_t margin_bytes) {
  if (l.recovery_bytes == 0) return 0;
  std::uint64_t need = l.recovery_bytes + margin_bytes;
  return u.avail_bytes >= need ? 0 : need - u.avail_bytes;
}

}  // namespace instanced::disk
