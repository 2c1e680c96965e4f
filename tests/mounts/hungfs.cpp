// A FUSE file system that never answers getattr: the test's stand-in for a mount whose
// server stopped answering (a dead network, a wedged blobfuse2). It takes rclone's command
// line, `rclone mount SOURCE MOUNT_POINT [flags...]`, so the agent starts it as its blob
// driver (storage.rclone points here), and mounts with rclone's fsname and subtype so the
// agent recognises the mount as its own. Built from libfuse3 (Debian libfuse3-dev).
// Cleanup is the test's: /sys/fs/fuse/connections/N/abort, then a lazy unmount.
#define FUSE_USE_VERSION 31
#include <cstdio>
#include <cstring>
#include <fuse.h>
#include <unistd.h>

static int hung_getattr(const char* path, struct stat* st, struct fuse_file_info* fi) {
  (void)path;
  (void)st;
  (void)fi;
  for (;;) pause();  // never answers
  return 0;
}

static fuse_operations make_ops() {
  fuse_operations ops{};
  ops.getattr = hung_getattr;
  return ops;
}

int main(int argc, char** argv) {
  if (argc < 4 || strcmp(argv[1], "mount") != 0) {
    fprintf(stderr, "usage: %s mount SOURCE MOUNT_POINT [rclone flags, ignored]\n", argv[0]);
    return 2;
  }
  char opts[512];
  snprintf(opts, sizeof opts, "fsname=%s,subtype=rclone,allow_other", argv[2]);
  char foreground[] = "-f", dash_o[] = "-o";
  char* fargs[] = {argv[0], argv[3], foreground, dash_o, opts, nullptr};
  fprintf(stderr, "hungfs: mounting %s on %s\n", argv[2], argv[3]);
  fuse_operations ops = make_ops();
  return fuse_main(5, fargs, &ops, nullptr);
}
