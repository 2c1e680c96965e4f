// The levels of a watched path and their hysteresis, under a simulated clock.
#include <catch2/catch.hpp>

#include "agent/disk/levels.hpp"
#include "tests/fakes/fake_clock.hpp"

using namespace instanced;
using namespace instanced::disk;
using namespace std::chrono_literals;

namespace {
constexpr std::uint64_t MiB = 1 << 20;

FsUsage usage(std::uint64_t avail, std::uint64_t avail_inodes = 1000) {
  return FsUsage{1024 * MiB, avail, avail, 10000, avail_inodes, avail_inodes};
}

WatchedPath rule_path() {
  WatchedPath p;
  p.path = "/";
  p.low = Threshold{100 * MiB, -1};
  p.recovery = Threshold{50 * MiB, -1};
  p.inodes_low = Threshold{0, 5};       // 500 of 10000
  p.inodes_recovery = Threshold{0, 1};  // 100 of 10000
  return p;
}
}  // namespace

TEST_CASE("levels: sizes and percentages, bytes and inodes", "[disk][levels]") {
  auto p = rule_path();
  auto l = limits_for(p, usage(0));
  CHECK(l.low_bytes == 100 * MiB);
  CHECK(l.recovery_bytes == 50 * MiB);
  CHECK(l.low_inodes == 500);
  CHECK(l.recovery_inodes == 100);
  CHECK(classify(usage(200 * MiB), l) == Level::ok);
  CHECK(classify(usage(99 * MiB), l) == Level::low);
  CHECK(classify(usage(49 * MiB), l) == Level::recovery_required);
  CHECK(classify(usage(200 * MiB, 400), l) == Level::low);               // inodes low
  CHECK(classify(usage(200 * MiB, 50), l) == Level::recovery_required);  // inodes exhausted
  // A percentage threshold is of the total size: 10 % of 1 GiB.
  p.low = Threshold{0, 10};
  CHECK(limits_for(p, usage(0)).low_bytes == 1024 * MiB / 10);
  // Without a recovery rule, inode exhaustion is only `low`.
  p.recovery = Threshold{0, -1};
  CHECK(classify(usage(200 * MiB, 50), limits_for(p, usage(0))) == Level::low);
  // A file system without inode accounting (total 0) is judged on bytes only.
  FsUsage no_inodes{1024 * MiB, 200 * MiB, 200 * MiB, 0, 0, 0};
  CHECK(classify(no_inodes, limits_for(rule_path(), no_inodes)) == Level::ok);
  CHECK(bytes_to_leave_recovery(usage(30 * MiB), limits_for(rule_path(), usage(0)), 8 * MiB) == 28 * MiB);
}

TEST_CASE("hysteresis: worse at once, better only above the margin for the hold time", "[disk][levels]") {
  testing::FakeClock clock;
  auto l = limits_for(rule_path(), usage(0));
  Hysteresis h(8 * MiB, 30s);
  CHECK(h.update(usage(200 * MiB), l, clock.now()) == Level::ok);
  CHECK(h.update(usage(40 * MiB), l, clock.now()) == Level::recovery_required);  // at once
  // Back above the rule but inside the margin: stays, however long.
  clock.advance(1h);
  CHECK(h.update(usage(55 * MiB), l, clock.now()) == Level::recovery_required);
  CHECK_FALSE(h.better_since());
  // Above rule + margin: counts from now, leaves after the hold time.
  CHECK(h.update(usage(60 * MiB), l, clock.now()) == Level::recovery_required);
  clock.advance(29s);
  CHECK(h.update(usage(60 * MiB), l, clock.now()) == Level::recovery_required);
  // A dip inside the margin restarts the hold.
  clock.advance(2s);
  CHECK(h.update(usage(57 * MiB), l, clock.now()) == Level::recovery_required);
  clock.advance(1s);
  CHECK(h.update(usage(60 * MiB), l, clock.now()) == Level::recovery_required);
  clock.advance(30s);
  CHECK(h.update(usage(60 * MiB), l, clock.now()) == Level::low);  // recovery left: now `low`
  // Worse again at once; and to ok only above low + margin for the hold.
  CHECK(h.update(usage(45 * MiB), l, clock.now()) == Level::recovery_required);
  CHECK(h.update(usage(500 * MiB), l, clock.now()) == Level::recovery_required);
  clock.advance(30s);
  CHECK(h.update(usage(500 * MiB), l, clock.now()) == Level::ok);
  CHECK(h.update(usage(105 * MiB), l, clock.now()) == Level::ok);  // above low: no change
  CHECK(h.update(usage(95 * MiB), l, clock.now()) == Level::low);
}
