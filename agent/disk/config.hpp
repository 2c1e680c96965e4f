// The disk guardian's settings (`disk:`, docs/disk.md).
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

struct WatchedPath {
  std::string path;
  Threshold low{10ULL << 30, -1};   // below this free: `low`
  Threshold recovery{0, -1};        // below this free: `recovery_required` (0: never)
  Threshold inodes_low{0, 5};       // free inodes below this (count or %): `low`
  Threshold inodes_recovery{0, 1};  // and below this: `recovery_required`, where `recovery` is set

  template <class V>
  void visit(V& v) {
    v("path", path, check::absolute_path());
    v("low", low);
    v("recovery", recovery);
    v("inodes_low", inodes_low);
    v("inodes_recovery", inodes_recovery);
  }
  std::optional<std::string> validate() const;
};

// When reclaim runs by itself: never, on entering `low` (or worse), or on entering
// `recovery_required` only.
enum class AutoReclaim { off, low, recovery_required };
template <>
struct EnumNames<AutoReclaim> {
  static constexpr std::array<std::string_view, 3> names{"off", "low", "recovery_required"};
};

// One reclaim rule: off unless enabled. Which keys mean something depends on the rule
// (docs/disk.md): `paths` for the file rules, `older_than` for tmp, `max_size` for journal.
struct ReclaimRule {
  bool enabled = false;
  std::vector<std::string> paths;
  Duration older_than = std::chrono::hours(24 * 7);
  ByteSize max_size{512 << 20};

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("paths", paths);
    v("older_than", older_than, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24 * 3650)));
    v("max_size", max_size);
  }
};

struct ReclaimConfig {
  AutoReclaim automatic = AutoReclaim::off;
  ReclaimRule pip_cache;
  ReclaimRule conda_cache;
  ReclaimRule apt_archives{false, {"/var/cache/apt/archives"}};
  ReclaimRule journal;
  ReclaimRule tmp{false, {"/tmp", "/var/tmp"}};
  ReclaimRule core_dumps{false, {"/var/lib/systemd/coredump", "/var/crash"}};
  ReclaimRule containers;
  ReclaimRule blob_cache;

  template <class V>
  void visit(V& v) {
    v("automatic", automatic);
    v("pip_cache", pip_cache);
    v("conda_cache", conda_cache);
    v("apt_archives", apt_archives);
    v("journal", journal);
    v("tmp", tmp);
    v("core_dumps", core_dumps);
    v("containers", containers);
    v("blob_cache", blob_cache);
  }
};

struct DiskConfig {
  Duration interval = std::chrono::seconds(10);
  ByteSize margin{512 << 20};                  // leaving a state needs this much more free ...
  Duration hold = std::chrono::seconds(30);    // ... for this long
  // `/` by the platform's numbers; /mnt (the temp disk) and /tmp (a small tmpfs on some
  // images) by share, since their sizes vary.
  std::vector<WatchedPath> paths{{"/", {10ULL << 30, -1}, {5ULL << 30, -1}, {0, 5}, {0, 1}},
                                 {"/mnt", {0, 10}, {0, -1}, {0, 5}, {0, 1}},
                                 {"/tmp", {0, 10}, {0, -1}, {0, 5}, {0, 1}}};
  std::string scan_root = "/";  // what "largest consumers" looks at (this file system only)
  std::int64_t scan_top = 20;
  std::int64_t scan_threads = 2;
  std::vector<std::string> reboot_command{"/usr/bin/systemctl", "reboot"};
  ReclaimConfig reclaim;

  template <class V>
  void visit(V& v) {
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("margin", margin);
    v("hold", hold, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(1)));
    v("paths", paths);
    v("scan_root", scan_root, check::absolute_path());
    v("scan_top", scan_top, check::range<std::int64_t>(1, 1000));
    v("scan_threads", scan_threads, check::range<std::int64_t>(1, 64));
    v("reboot_command", reboot_command);
    v("reclaim", reclaim);
  }
  std::optional<std::string> validate() const;
};

}  // namespace instanced
