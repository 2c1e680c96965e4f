#include "common/fs.hpp"

#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <random>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

namespace instanced {
namespace {

Error errno_error(std::string_view what, const std::filesystem::path& path, int err) {
  return Error{fmt::format("{} {}: {}", what, path.string(), std::strerror(err)),
               err == ENOENT ? ErrorKind::not_found : ErrorKind::failed};
}

}  // namespace

bool write_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::write(fd, data.data(), data.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::string_view file_kind(unsigned mode) {
  switch (mode & S_IFMT) {
    case S_IFREG: return "a regular file";
    case S_IFDIR: return "a directory";
    case S_IFIFO: return "a FIFO";
    case S_IFCHR: return "a character device";
    case S_IFBLK: return "a block device";
    case S_IFSOCK: return "a socket";
    case S_IFLNK: return "a symbolic link";
    default: return "of an unknown kind";
  }
}

Result<std::string> read_regular_file(const std::filesystem::path& path, std::size_t max_bytes, struct stat* st) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC));
  if (fd.get() < 0) {
    const int err = errno;
    return Error{fmt::format("{}: cannot open: {}", path.string(), std::strerror(err)),
                 err == ENOENT ? ErrorKind::not_found : ErrorKind::failed};
  }
  struct stat own {};
  struct stat& s = st ? *st : own;
  if (::fstat(fd.get(), &s) != 0) return Error{fmt::format("{}: cannot stat: {}", path.string(), std::strerror(errno))};
  if (!S_ISREG(s.st_mode)) return Error{fmt::format("{}: not a regular file ({})", path.string(), file_kind(s.st_mode))};
  std::string out;
  char buf[8192];
  for (;;) {
    ssize_t n = ::read(fd.get(), buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Error{fmt::format("{}: cannot read: {}", path.string(), std::strerror(errno))};
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::size_t>(n) > max_bytes)
      return Error{fmt::format("{}: larger than {} bytes", path.string(), max_bytes)};
    out.append(buf, static_cast<std::size_t>(n));
  }
  return out;
}

Result<FsUsage> RealFilesystem::usage(const std::filesystem::path& path) {
  struct statvfs st{};
  if (::statvfs(path.c_str(), &st) != 0) return errno_error("statvfs", path, errno);
  FsUsage u;
  u.total_bytes = static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize;
  u.free_bytes = static_cast<std::uint64_t>(st.f_bfree) * st.f_frsize;
  u.avail_bytes = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
  u.total_inodes = st.f_files;
  u.free_inodes = st.f_ffree;
  u.avail_inodes = st.f_favail;
  return u;
}

Result<std::string> RealFilesystem::read_file(const std::filesystem::path& path, std::size_t max_bytes) {
  return read_regular_file(path, max_bytes);
}

Result<void> RealFilesystem::write_file_atomic(const std::filesystem::path& path, std::string_view data,
                                               unsigned mode, bool durable) {
  auto dir = path.parent_path();
  if (dir.empty()) dir = ".";
  // Unique in this process; random across processes (read once: a job's start writes several).
  static std::atomic<std::uint64_t> next{(std::uint64_t{std::random_device{}()} << 32) | std::random_device{}()};
  auto tmp = dir / fmt::format(".{}.tmp-{:016x}", path.filename().string(), next.fetch_add(1));
  Fd fd(::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode));
  if (fd.get() < 0) return errno_error("create", tmp, errno);
  auto fail = [&](std::string_view what) {
    int err = errno;
    ::unlink(tmp.c_str());
    return errno_error(what, tmp, err);
  };
  // The umask may have narrowed the mode; state files must have exactly `mode`.
  if (::fchmod(fd.get(), mode) != 0) return fail("chmod");
  if (!write_all(fd.get(), data)) return fail("write");
  if (durable && ::fsync(fd.get()) != 0) return fail("fsync");
  if (::close(fd.release()) != 0) return fail("close");
  if (::rename(tmp.c_str(), path.c_str()) != 0) return fail("rename");
  if (!durable) return {};
  Fd dfd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (dfd.get() < 0 || ::fsync(dfd.get()) != 0) return errno_error("fsync directory", dir, errno);
  return {};
}

Result<void> RealFilesystem::append_file(const std::filesystem::path& path, std::string_view data, unsigned mode,
                                         bool sync) {
  Fd fd(::open(path.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode));
  if (fd.get() < 0) return errno_error("open", path, errno);
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) return errno_error("stat", path, errno);
  if (!S_ISREG(st.st_mode)) return Error{fmt::format("{} is {}, not a regular file", path.string(), file_kind(st.st_mode))};
  if (!write_all(fd.get(), data)) {
    const int err = errno;
    (void)::ftruncate(fd.get(), st.st_size);  // never a partial line for the next append to follow
    return errno_error("write", path, err);
  }
  if (sync && ::fdatasync(fd.get()) != 0) return errno_error("fdatasync", path, errno);
  return {};
}

Result<void> RealFilesystem::rename(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (::rename(from.c_str(), to.c_str()) == 0) return {};
  const int err = errno;
  return Error{fmt::format("rename {} to {}: {}", from.string(), to.string(), std::strerror(err)),
               err == ENOENT ? ErrorKind::not_found : ErrorKind::failed};
}

Result<void> RealFilesystem::sync_path(const std::filesystem::path& path) {
  Fd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (fd.get() < 0) return errno_error("open", path, errno);
  if (::fsync(fd.get()) != 0) return errno_error("fsync", path, errno);
  return {};
}

Result<void> RealFilesystem::create_directories(const std::filesystem::path& path, unsigned mode) {
  struct stat st{};
  // The usual cases first, one call each: made earlier, or only the last part missing.
  if (::stat(path.c_str(), &st) != 0) {
    if (::mkdir(path.c_str(), mode) == 0) return {};
    std::filesystem::path cur;
    for (const auto& part : path) {
      cur /= part;
      if (::mkdir(cur.c_str(), mode) != 0 && errno != EEXIST) return errno_error("mkdir", cur, errno);
    }
    if (::stat(path.c_str(), &st) != 0) return errno_error("stat", path, errno);
  }
  if (!S_ISDIR(st.st_mode)) return Error{fmt::format("{} exists and is not a directory", path.string())};
  return {};
}

}  // namespace instanced
