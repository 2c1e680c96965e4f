// What fills a file system: a parallel scan of one tree, on that file system only (never
// into mount points below it: network, FUSE, tmpfs), counting what GNU `du -x -B1` and
// `du -x --apparent-size` count: every entry's allocated blocks (or size), hard-linked
// files once. Blocking: it runs on threads of its own, at idle I/O priority and nice 19,
// and reports progress through atomics the event loop reads.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace instanced::disk {

struct ScanProgress {
  std::atomic<std::uint64_t> files{0};  // entries of any kind, directories included
  std::atomic<std::uint64_t> dirs{0};
  std::atomic<std::uint64_t> bytes{0};  // allocated bytes counted so far
  std::atomic<bool> cancel{false};      // set to stop early (the result is partial)
};

struct ScanEntry {
  std::string path;
  std::uint64_t bytes = 0;     // allocated (du -B1)
  std::uint64_t apparent = 0;  // st_size (du --apparent-size)
};

struct ScanResult {
  std::string root;
  std::uint64_t bytes = 0;
  std::uint64_t apparent = 0;
  std::uint64_t files = 0;
  std::uint64_t dirs = 0;
  std::uint64_t errors = 0;  // entries that could not be read (permission, vanished)
  bool cancelled = false;
  std::vector<ScanEntry> top_dirs;   // largest directories below the root, by bytes
  std::vector<ScanEntry> top_files;  // largest files, by bytes
  std::vector<std::string> mounts_skipped;  // mount points found and not entered
  std::string error;  // the root itself could not be scanned
};

struct ScanOptions {
  unsigned threads = 2;
  std::size_t top = 20;
  bool low_priority = true;  // idle I/O class and nice 19 for the scanning threads
};

ScanResult scan_tree(const std::string& root, const ScanOptions& options, ScanProgress& progress);

}  // namespace instanced::disk
