// File-system side effects behind an interface. write_file_atomic is the crash-safe way
// every subsystem writes its state under state_dir: a reader sees the old file or the new
// one, never half of either, even across a power cut.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <sys/stat.h>
#include <unistd.h>
#include <utility>

#include "common/result.hpp"

namespace instanced {

// An owned file descriptor, closed when it goes (-1: none).
class Fd {
 public:
  Fd() = default;
  explicit Fd(int fd) : fd_(fd) {}
  ~Fd() { reset(); }
  Fd(Fd&& other) noexcept : fd_(other.release()) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      reset();
      fd_ = other.release();
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }
  explicit operator bool() const { return fd_ >= 0; }
  int release() { return std::exchange(fd_, -1); }
  void reset() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  int fd_ = -1;
};

struct FsUsage {
  std::uint64_t total_bytes = 0;
  std::uint64_t free_bytes = 0;   // f_bfree: including the root reserve
  std::uint64_t avail_bytes = 0;  // f_bavail: what an unprivileged user can still write
  std::uint64_t total_inodes = 0;
  std::uint64_t free_inodes = 0;
  std::uint64_t avail_inodes = 0;
};

// write(2) until all of `data` is written (EINTR and short writes handled); false on error.
bool write_all(int fd, std::string_view data);

// Reads a file that must be a regular file, through one descriptor: opened without
// blocking (a FIFO cannot stall the reader), checked with fstat once the kernel has
// followed its bounded chain of symbolic links (a loop is ELOOP), and read up to
// `max_bytes` (more is an error, so /dev/zero or a file that keeps growing cannot exhaust
// memory). Errors read "PATH: why". `st`, if given, receives the descriptor's fstat.
Result<std::string> read_regular_file(const std::filesystem::path& path, std::size_t max_bytes,
                                      struct stat* st = nullptr);

// "a directory", "a FIFO", ...: what a file of mode `mode` is, for error messages.
std::string_view file_kind(unsigned mode);

class Filesystem {
 public:
  virtual ~Filesystem() = default;
  // May block for a long time on a hung network mount: call it through the BlockingPool.
  virtual Result<FsUsage> usage(const std::filesystem::path& path) = 0;
  virtual Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) = 0;
  // Writes a temporary file beside `path` (mode `mode`), fsyncs it, renames it over `path`
  // and fsyncs the directory. With `durable` false, no fsync: the file is whole or absent
  // after a crash of the process, not necessarily after one of the machine (for files that
  // mean nothing after a reboot, such as a monitor's spec).
  virtual Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data,
                                         unsigned mode = 0600, bool durable = true) = 0;
  virtual Result<void> create_directories(const std::filesystem::path& path, unsigned mode) = 0;
  // Appends `data` to `path` (created with `mode`) whole or not at all (a short write is
  // cut back off); with `sync`, then fdatasync: everything appended so far is durable.
  virtual Result<void> append_file(const std::filesystem::path& path, std::string_view data, unsigned mode,
                                   bool sync) = 0;
  // rename(2): `to` replaced at once, not yet durable (sync_path of the folder makes it so).
  virtual Result<void> rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  // fsync of a file or a folder (a folder's: the names created, removed or renamed in it).
  virtual Result<void> sync_path(const std::filesystem::path& path) = 0;
};

class RealFilesystem final : public Filesystem {
 public:
  Result<FsUsage> usage(const std::filesystem::path& path) override;
  Result<std::string> read_file(const std::filesystem::path& path, std::size_t max_bytes) override;
  Result<void> write_file_atomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0600,
                                 bool durable = true) override;
  Result<void> create_directories(const std::filesystem::path& path, unsigned mode) override;
  Result<void> append_file(const std::filesystem::path& path, std::string_view data, unsigned mode,
                           bool sync) override;
  Result<void> rename(const std::filesystem::path& from, const std::filesystem::path& to) override;
  Result<void> sync_path(const std::filesystem::path& path) override;
};

}  // namespace instanced
