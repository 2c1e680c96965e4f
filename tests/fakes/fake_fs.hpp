// An in-memory Filesystem: usage figures the test sets per path, files kept in a map.
// Thread-safe: subsystems call it from the blocking pool.
#pragma once

#include <atomic>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "common/fs.hpp"

namespace instanced::testing {

class FakeFilesystem final : public Filesystem {
 public:
  // A path that was never given figures does not exist (ErrorKind::not_found, as ENOENT).
  void set_usage(const std::filesystem::path& path, FsUsage u) {
    std::lock_guard lock(mu_);
    usage_[path] = u;
  }
  void remove_usage(const std::filesystem::path& path) {
    std::lock_guard lock(mu_);
    usage_.erase(path);
  }
  // Every usage() call, answered or not: a round of a watcher has looked once it grew.
  std::size_t usage_calls() const { return usage_calls_.load(); }

  Result<FsUsage> usage(const std::filesystem::path& path) override {
    std::lock_guard lock(mu_);
    ++usage_calls_;
    auto it = usage_.find(path);
    if (it == usage_.end()) return Error{"statvfs " + path.string() + ": No such file or directory", ErrorKind::not_found};
    return it->second;
  }
  Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) override {
    std::lock_guard lock(mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return Error{"open " + path.string() + ": No such file or directory", ErrorKind::not_found};
    if (it->second.size() > max_bytes) return Error{path.string() + ": larger than " + std::to_string(max_bytes) + " bytes"};
    return it->second;
  }
  Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0600,
                                 bool /*durable*/ = true) override {
    std::lock_guard lock(mu_);
    files_[path] = std::string(data);
    modes_[path] = mode;
    return {};
  }
  Result<void> create_directories(const std::filesystem::path& path, unsigned mode) override {
    std::lock_guard lock(mu_);
    directories_.insert(path);
    modes_[path] = mode;
    return {};
  }

  Result<void> append_file(const std::filesystem::path& path, std::string_view data, unsigned mode,
                           bool /*sync*/) override {
    std::lock_guard lock(mu_);
    files_[path] += std::string(data);
    modes_.emplace(path, mode);
    return {};
  }

  Result<void> rename(const std::filesystem::path& from, const std::filesystem::path& to) override {
    std::lock_guard lock(mu_);
    auto it = files_.find(from);
    if (it == files_.end()) return Error{"rename " + from.string() + ": No such file or directory", ErrorKind::not_found};
    files_[to] = std::move(it->second);
    files_.erase(it);
    if (auto m = modes_.find(from); m != modes_.end()) modes_[to] = m->second;
    return {};
  }
  Result<void> sync_path(const std::filesystem::path& path) override {
    std::lock_guard lock(mu_);
    if (!files_.contains(path) && !directories_.contains(path))
      return Error{"open " + path.string() + ": No such file or directory", ErrorKind::not_found};
    synced_paths_.push_back(path);
    return {};
  }
  // Every sync_path() answered, in order.
  std::vector<std::filesystem::path> synced_paths() const {
    std::lock_guard lock(mu_);
    return synced_paths_;
  }

  std::optional<std::string> file(const std::filesystem::path& path) const {
    std::lock_guard lock(mu_);
    auto it = files_.find(path);
    if (it == files_.end()) return std::nullopt;
    return it->second;
  }

 private:
  mutable std::mutex mu_;
  std::map<std::filesystem::path, FsUsage> usage_;
  std::map<std::filesystem::path, std::string> files_;
  std::map<std::filesystem::path, unsigned> modes_;
  std::set<std::filesystem::path> directories_;
  std::vector<std::filesystem::path> synced_paths_;
  std::atomic<std::size_t> usage_calls_{0};
};

}  // namespace instanced::testing
