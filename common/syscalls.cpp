#include "common/syscalls.hpp"

#include <cerrno>
#include <csignal>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <iterator>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "common/fs.hpp"

// Numbers and flags the 3.10 kernel headers of the portable sysroot do not have (x86_64).
#ifndef SYS_memfd_create
#define SYS_memfd_create 319
#endif
#ifndef SYS_statx
#define SYS_statx 332
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_close_range
#define SYS_close_range 436
#endif
#ifndef F_ADD_SEALS
#define F_ADD_SEALS 1033
#define F_SEAL_SEAL 0x0001
#define F_SEAL_SHRINK 0x0002
#define F_SEAL_GROW 0x0004
#define F_SEAL_WRITE 0x0008
#endif
#if !defined(__x86_64__)
#error "the system call numbers above are x86_64's"
#endif

namespace instanced::sys {
namespace {

constexpr unsigned kMfdCloexec = 0x0001, kMfdAllowSealing = 0x0002;
constexpr unsigned kStatxBasicStats = 0x07ff;
constexpr std::uint64_t kStatxAttrMountRoot = 0x2000;

// The kernel's struct statx, as far as is read here (the buffer is the full 256 bytes).
struct StatxBuffer {
  std::uint32_t mask, blksize;
  std::uint64_t attributes;
  std::uint32_t nlink, uid, gid;
  std::uint16_t mode, spare0;
  std::uint64_t ino, size, blocks, attributes_mask;
  unsigned char rest[256 - 64];
};
static_assert(sizeof(StatxBuffer) == 256 && offsetof(StatxBuffer, attributes_mask) == 56);

struct LinuxDirent64 {
  std::uint64_t ino;
  std::int64_t off;
  unsigned short reclen;
  unsigned char type;
  char name[1];
};

// Parses a descriptor number without allocating; -1 if `s` is not one.
long fd_number(const char* s) noexcept {
  if (*s == '\0') return -1;
  long n = 0;
  for (; *s; ++s) {
    if (*s < '0' || *s > '9' || n > 1L << 30) return -1;
    n = n * 10 + (*s - '0');
  }
  return n;
}

// close_range's fallback through /proc/self/fd; false when /proc cannot be read.
bool close_listed(unsigned first, unsigned last) noexcept {
  int dir = ::open("/proc/self/fd", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir < 0) return false;
  alignas(LinuxDirent64) char buf[4096];
  for (;;) {
    long n = ::syscall(SYS_getdents64, dir, buf, sizeof buf);
    if (n <= 0) break;
    for (long at = 0; at < n;) {
      auto* d = reinterpret_cast<LinuxDirent64*>(buf + at);
      at += d->reclen;
      long fd = fd_number(d->name);
      if (fd >= 0 && fd != dir && static_cast<unsigned long>(fd) >= first && static_cast<unsigned long>(fd) <= last)
        ::close(static_cast<int>(fd));
    }
  }
  ::close(dir);
  return true;
}

// The mount id /proc/self/fdinfo shows for `fd`; nothing if it cannot be read.
std::optional<std::uint64_t> mount_id(int fd) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/fdinfo/%d", fd);
  Fd info(::open(path, O_RDONLY | O_CLOEXEC));
  if (!info) return std::nullopt;
  char text[512];
  ssize_t n = ::read(info.get(), text, sizeof text - 1);
  if (n <= 0) return std::nullopt;
  text[n] = '\0';
  const char* field = std::strstr(text, "mnt_id:");
  if (!field) return std::nullopt;
  return std::strtoull(field + 7, nullptr, 10);
}

}  // namespace

void close_range(unsigned first, unsigned last) noexcept {
  if (first > last) return;
  if (::syscall(SYS_close_range, first, last, 0u) == 0) return;
  if (close_listed(first, last)) return;
  struct rlimit rl {};
  unsigned top = ::getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1u << 20 ? static_cast<unsigned>(rl.rlim_cur) : 1u << 16;
  for (unsigned fd = first; fd <= last && fd < top; ++fd) ::close(static_cast<int>(fd));
}

int memfd_create(const char* name, bool allow_sealing) noexcept {
  return static_cast<int>(::syscall(SYS_memfd_create, name, kMfdCloexec | (allow_sealing ? kMfdAllowSealing : 0u)));
}

bool seal_memfd(int fd) noexcept {
  return ::fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) == 0;
}

std::optional<bool> is_mount_root(int dirfd, const char* name) noexcept {
  StatxBuffer sx{};
  if (::syscall(SYS_statx, dirfd, name, AT_SYMLINK_NOFOLLOW, kStatxBasicStats, &sx) == 0 &&
      (sx.attributes_mask & kStatxAttrMountRoot))
    return (sx.attributes & kStatxAttrMountRoot) != 0;
  return is_mount_root_by_mount_id(dirfd, name);
}

// An older kernel: a mount's root has another mount id than the folder it is in.
std::optional<bool> is_mount_root_by_mount_id(int dirfd, const char* name) noexcept {
  Fd fd(::openat(dirfd, name, O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (!fd) return std::nullopt;
  auto inner = mount_id(fd.get());
  auto outer = mount_id(dirfd);
  if (!inner || !outer) return std::nullopt;
  return *inner != *outer;
}

const char* signal_abbrev(int signal) noexcept {
  static constexpr const char* kNames[] = {
      nullptr, "HUP",  "INT",  "QUIT", "ILL",  "TRAP", "ABRT", "BUS",    "FPE",  "KILL",  "USR1",
      "SEGV",  "USR2", "PIPE", "ALRM", "TERM", "STKFLT", "CHLD", "CONT", "STOP", "TSTP", "TTIN",
      "TTOU",  "URG",  "XCPU", "XFSZ", "VTALRM", "PROF", "WINCH", "IO",  "PWR",  "SYS"};
  if (signal > 0 && signal < static_cast<int>(std::size(kNames))) return kNames[signal];
  return nullptr;
}

int pidfd_open(int pid) noexcept { return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)); }

}  // namespace instanced::sys
