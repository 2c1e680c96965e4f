#include "agent/mounts/ops.hpp"

#include "common/process.hpp"

#include <cerrno>
#include <cstdlib>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.hpp"

namespace instanced::mounts {

Result<std::string> RealMountOps::mountinfo() {
  std::ifstream in("/proc/self/mountinfo");
  if (!in) return Error{"cannot read /proc/self/mountinfo"};
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

ProbeOutcome RealMountOps::probe(const std::string& mp, bool write) {
  struct stat st{};
  if (::stat(mp.c_str(), &st) != 0) return {errno, "stat"};
  DIR* d = ::opendir(mp.c_str());
  if (!d) return {errno, "readdir"};
  errno = 0;
  for (int i = 0; i < 3 && ::readdir(d); ++i) {
  }
  int err = errno;
  ::closedir(d);
  if (err) return {err, "readdir"};
  if (!write) return {};
  std::string file = mp + "/.instanced-probe-" + std::to_string(::getpid());
  const std::string text = "instanced probe\n";
  Fd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
  if (!fd) return {errno, "write"};
  bool ok = write_all(fd.get(), text);
  err = errno;
  if (::close(fd.release()) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    ::unlink(file.c_str());
    return {err ? err : EIO, "write"};
  }
  fd = Fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return {errno, "read back"};
  char buf[64];
  ssize_t n = ::read(fd.get(), buf, sizeof buf);
  err = errno;
  fd.reset();
  if (n != static_cast<ssize_t>(text.size()) || std::string_view(buf, static_cast<std::size_t>(n)) != text) {
    ::unlink(file.c_str());
    return {n < 0 ? err : EIO, "read back"};
  }
  if (::unlink(file.c_str()) != 0) return {errno, "delete"};
  return {};
}

int RealMountOps::sync(const std::string& mp) {
  Fd fd(::open(mp.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd) return errno;
  return ::syncfs(fd.get()) == 0 ? 0 : errno;
}

int RealMountOps::unmount(const std::string& mp, bool lazy) {
  // UMOUNT_NOFOLLOW: the mount point is the configured path itself, never a symlink's target.
  return ::umount2(mp.c_str(), (lazy ? MNT_DETACH : 0) | UMOUNT_NOFOLLOW) == 0 ? 0 : errno;
}

int RealMountOps::make_directory(const std::string& path, unsigned mode) {
  std::string partial;
  std::size_t pos = 1;
  while (pos <= path.size()) {
    auto next = path.find('/', pos);
    if (next == std::string::npos) next = path.size();
    partial = path.substr(0, next);
    if (::mkdir(partial.c_str(), mode) != 0 && errno != EEXIST) return errno;
    pos = next + 1;
  }
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return errno;
  return S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
}

std::string RealMountOps::find_program(const std::string& name) { return instanced::find_program(name); }

}  // namespace instanced::mounts
