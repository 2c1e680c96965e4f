// Runs a command as Linux 4.15 (Ubuntu 18.04's kernel) would: a seccomp filter answers
// ENOSYS to every system call added after 4.15, for the command and all it starts.
// usage: instanced-test-old-kernel COMMAND [ARGS...]
#include <seccomp.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <unistd.h>

namespace {
// x86_64: statx (332) was the last call 4.15 had; 333-334 came in 4.18, and since 5.1
// every architecture numbers new calls from 424 on (pidfd_*, clone3, close_range, openat2,
// faccessat2, ...). 600 leaves room for calls newer than this file.
constexpr int kFirstAfter415 = 333;
constexpr int kLastBeforeUnified = 334;
constexpr int kFirstUnified = 424;
constexpr int kLastChecked = 600;
}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s COMMAND [ARGS...]\n", argv[0]);
    return 2;
  }
  scmp_filter_ctx ctx = seccomp_init(SCMP_ACT_ALLOW);
  if (!ctx) return 1;
  // As root, keep setuid programs usable (no_new_privs off needs CAP_SYS_ADMIN).
  if (::geteuid() == 0) seccomp_attr_set(ctx, SCMP_FLTATR_CTL_NNP, 0);
  for (int nr = kFirstAfter415; nr <= kLastChecked; ++nr) {
    if (nr > kLastBeforeUnified && nr < kFirstUnified) continue;
    if (int rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0); rc != 0) {
      std::fprintf(stderr, "old-kernel: cannot filter system call %d: %s\n", nr, std::strerror(-rc));
      return 1;
    }
  }
  if (int rc = seccomp_load(ctx); rc != 0) {
    std::fprintf(stderr, "old-kernel: cannot load the filter: %s\n", std::strerror(-rc));
    return 1;
  }
  seccomp_release(ctx);
  ::execvp(argv[1], argv + 1);
  std::fprintf(stderr, "old-kernel: cannot run %s: %s\n", argv[1], std::strerror(errno));
  return 127;
}
