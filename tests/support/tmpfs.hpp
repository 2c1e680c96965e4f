// A tmpfs mounted on dir/name for a test's lifetime (tests run as root): a small real file
// system to fill, or to hold a state folder that can run out of space.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <filesystem>
#include <fmt/format.h>
#include <string>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

class Tmpfs {
 public:
  // `options` as for mount(8): "size=4m".
  Tmpfs(const TempDir& dir, const std::string& name, const std::string& options) : path_(dir / name) {
    std::filesystem::create_directories(path_);
    REQUIRE(::mount("tmpfs", path_.c_str(), "tmpfs", 0, options.c_str()) == 0);
  }
  ~Tmpfs() { ::umount2(path_.c_str(), MNT_DETACH); }
  Tmpfs(const Tmpfs&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::uint64_t avail() const {
    struct statvfs s {};
    ::statvfs(path_.c_str(), &s);
    return static_cast<std::uint64_t>(s.f_bavail) * s.f_frsize;
  }
  void fill(const std::string& file, std::uint64_t bytes) const {
    std::filesystem::create_directories((path_ / file).parent_path());
    REQUIRE(run_command(fmt::format("fallocate -l {} {}", bytes, (path_ / file).string())).exit_code == 0);
  }

 private:
  std::filesystem::path path_;
};

}  // namespace instanced::testing
