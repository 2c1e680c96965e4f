// A FUSE file system that passes everything through to a folder, except that fsync and
// fdatasync answer EIO while a flag file exists: the test's stand-in for a disk whose
// writes stop reaching the platter (a failing disk, a full thin pool). What is written
// still lands in the page cache, as on such a disk. The flag file may hold a file name:
// then only that file's syncs fail. Built from libfuse3 (Debian libfuse3-dev).
// usage: failfs SOURCE MOUNT_POINT FLAG_FILE
// Cleanup is the test's (TempDir): the connection aborted, a lazy unmount.
#define FUSE_USE_VERSION 31
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fuse.h>
#include <string>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/time.h>
#include <unistd.h>

namespace {

std::string source;  // the folder passed through
std::string flag;    // while it exists, syncs fail

std::string real(const char* path) { return source + path; }
int fail(int r) { return r < 0 ? -errno : r; }
// Whether a sync of `path` fails now: the flag file exists and is empty or names the file.
bool failing(const char* path) {
  FILE* f = ::fopen(flag.c_str(), "re");
  if (!f) return false;
  char name[256] = "";
  if (!::fgets(name, sizeof name, f)) name[0] = '\0';
  ::fclose(f);
  name[::strcspn(name, "\n")] = '\0';
  const char* base = ::strrchr(path, '/');
  return name[0] == '\0' || ::strcmp(base ? base + 1 : path, name) == 0;
}

int do_getattr(const char* path, struct stat* st, fuse_file_info* fi) {
  return fail(fi ? ::fstat(static_cast<int>(fi->fh), st) : ::lstat(real(path).c_str(), st));
}

int do_readdir(const char* path, void* buf, fuse_fill_dir_t fill, off_t, fuse_file_info*, fuse_readdir_flags) {
  DIR* d = ::opendir(real(path).c_str());
  if (!d) return -errno;
  while (dirent* e = ::readdir(d)) {
    struct stat st {};
    st.st_ino = e->d_ino;
    st.st_mode = static_cast<mode_t>(DTTOIF(e->d_type));
    if (fill(buf, e->d_name, &st, 0, static_cast<fuse_fill_dir_flags>(0))) break;
  }
  ::closedir(d);
  return 0;
}

int do_open(const char* path, fuse_file_info* fi) {
  const int fd = ::open(real(path).c_str(), fi->flags);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int do_create(const char* path, mode_t mode, fuse_file_info* fi) {
  const int fd = ::open(real(path).c_str(), fi->flags | O_CREAT, mode);
  if (fd < 0) return -errno;
  fi->fh = static_cast<uint64_t>(fd);
  return 0;
}

int do_read(const char*, char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return fail(static_cast<int>(::pread(static_cast<int>(fi->fh), buf, size, off)));
}

int do_write(const char*, const char* buf, size_t size, off_t off, fuse_file_info* fi) {
  return fail(static_cast<int>(::pwrite(static_cast<int>(fi->fh), buf, size, off)));
}

int do_release(const char*, fuse_file_info* fi) { return fail(::close(static_cast<int>(fi->fh))); }

int do_fsync(const char* path, int datasync, fuse_file_info* fi) {
  if (failing(path)) return -EIO;
  const int fd = static_cast<int>(fi->fh);
  return fail(datasync ? ::fdatasync(fd) : ::fsync(fd));
}

int do_fsyncdir(const char* path, int, fuse_file_info*) { return failing(path) ? -EIO : 0; }

int do_truncate(const char* path, off_t size, fuse_file_info* fi) {
  return fail(fi ? ::ftruncate(static_cast<int>(fi->fh), size) : ::truncate(real(path).c_str(), size));
}

int do_rename(const char* from, const char* to, unsigned int flags) {
  if (flags != 0) return -EINVAL;
  return fail(::rename(real(from).c_str(), real(to).c_str()));
}

int do_utimens(const char* path, const timespec tv[2], fuse_file_info*) {
  return fail(::utimensat(AT_FDCWD, real(path).c_str(), tv, AT_SYMLINK_NOFOLLOW));
}

int do_readlink(const char* path, char* buf, size_t size) {
  const ssize_t n = ::readlink(real(path).c_str(), buf, size - 1);
  if (n < 0) return -errno;
  buf[n] = '\0';
  return 0;
}

fuse_operations make_ops() {
  fuse_operations ops{};
  ops.getattr = do_getattr;
  ops.readdir = do_readdir;
  ops.open = do_open;
  ops.create = do_create;
  ops.read = do_read;
  ops.write = do_write;
  ops.release = do_release;
  ops.fsync = do_fsync;
  ops.fsyncdir = do_fsyncdir;
  ops.truncate = do_truncate;
  ops.rename = do_rename;
  ops.utimens = do_utimens;
  ops.readlink = do_readlink;
  ops.mkdir = [](const char* p, mode_t m) { return fail(::mkdir(real(p).c_str(), m)); };
  ops.rmdir = [](const char* p) { return fail(::rmdir(real(p).c_str())); };
  ops.unlink = [](const char* p) { return fail(::unlink(real(p).c_str())); };
  ops.mknod = [](const char* p, mode_t m, dev_t d) { return fail(::mknod(real(p).c_str(), m, d)); };
  ops.symlink = [](const char* to, const char* p) { return fail(::symlink(to, real(p).c_str())); };
  ops.link = [](const char* from, const char* to) { return fail(::link(real(from).c_str(), real(to).c_str())); };
  ops.chmod = [](const char* p, mode_t m, fuse_file_info*) { return fail(::chmod(real(p).c_str(), m)); };
  ops.chown = [](const char* p, uid_t u, gid_t g, fuse_file_info*) { return fail(::lchown(real(p).c_str(), u, g)); };
  ops.access = [](const char* p, int m) { return fail(::access(real(p).c_str(), m)); };
  ops.statfs = [](const char* p, struct statvfs* s) { return fail(::statvfs(real(p).c_str(), s)); };
  return ops;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s SOURCE MOUNT_POINT FLAG_FILE\n", argv[0]);
    return 2;
  }
  source = argv[1];
  flag = argv[3];
  char opts[] = "fsname=failfs,allow_other,default_permissions";
  char foreground[] = "-f", single[] = "-s", dash_o[] = "-o";
  char* fargs[] = {argv[0], argv[2], foreground, single, dash_o, opts, nullptr};
  fprintf(stderr, "failfs: %s on %s, syncs fail while %s exists\n", argv[1], argv[2], argv[3]);
  fuse_operations ops = make_ops();
  return fuse_main(6, fargs, &ops, nullptr);
}
