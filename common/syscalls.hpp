// System calls that glibc 2.17 (the portable build's floor) has no wrapper for, or that
// Linux 4.15 (Ubuntu 18.04's kernel) does not have, each with the fallback the agent uses
// where the kernel answers ENOSYS. The portable build makes any other newer glibc wrapper
// a build error; raw syscall() numbers live here and nowhere else.
#pragma once

#include <optional>

namespace instanced::sys {

// Closes every descriptor in [first, last]. close_range(2) (Linux 5.9); without it, the
// descriptors /proc/self/fd lists, else each number up to the descriptor limit. Only
// system calls and no allocation: safe between fork and exec.
void close_range(unsigned first, unsigned last) noexcept;

// memfd_create(2) (Linux 3.17, glibc 2.27); -1 with errno set on failure.
int memfd_create(const char* name, bool allow_sealing) noexcept;
// Seals a memfd against every change (F_ADD_SEALS, Linux 3.17); false on failure.
bool seal_memfd(int fd) noexcept;

// Whether `name` in `dirfd` is the root of a mount (a bind mount from the same file
// system included): statx(2)'s STATX_ATTR_MOUNT_ROOT (Linux 5.8); on older kernels its
// mount id against the folder's, from /proc/self/fdinfo (Linux 3.15). Nothing when neither
// can tell.
std::optional<bool> is_mount_root(int dirfd, const char* name) noexcept;
// is_mount_root's fallback alone (tests reach it on kernels that have the statx attribute).
std::optional<bool> is_mount_root_by_mount_id(int dirfd, const char* name) noexcept;

// pidfd_open(2) (Linux 5.3): a descriptor that becomes readable when `pid` exits, also for
// a process that is not a child. -1 with errno set (ENOSYS on older kernels: then the
// caller polls).
int pidfd_open(int pid) noexcept;

// "TERM" for SIGTERM (sigabbrev_np is glibc 2.32); nullptr for a number without a name.
const char* signal_abbrev(int signal) noexcept;

}  // namespace instanced::sys
