// The OS side of mounting, behind an interface (tests substitute it; the product wires
// RealMountOps). Helpers (mount.cifs, rclone, blobfuse2, smbclient) are started through the
// ProcessRunner, not here.
#pragma once

#include <string>

#include "common/result.hpp"

namespace instanced::mounts {

// What a health probe found: error 0, or the errno of the step that failed.
struct ProbeOutcome {
  int error = 0;
  std::string step;  // "stat", "readdir", "write", "read back", "delete"
};

class MountOps {
 public:
  virtual ~MountOps() = default;
  // /proc/self/mountinfo's text. Reading procfs never touches the mounted file systems.
  virtual Result<std::string> mountinfo() = 0;
  // The calls below may block for ever on a hung mount: run them through a SingleFlight.
  // stat, a directory read and, with `write`, a write-read-delete of a hidden file.
  virtual ProbeOutcome probe(const std::string& mount_point, bool write) = 0;
  virtual int sync(const std::string& mount_point) = 0;               // syncfs: 0 or errno
  virtual int unmount(const std::string& mount_point, bool lazy) = 0;  // umount2: 0 or errno
  virtual int make_directory(const std::string& path, unsigned mode) = 0;  // mkdir -p: 0 or errno
  // The absolute path of a program (a bare name is looked up on PATH); empty when absent.
  virtual std::string find_program(const std::string& name) = 0;
};

class RealMountOps final : public MountOps {
 public:
  Result<std::string> mountinfo() override;
  ProbeOutcome probe(const std::string& mount_point, bool write) override;
  int sync(const std::string& mount_point) override;
  int unmount(const std::string& mount_point, bool lazy) override;
  int make_directory(const std::string& path, unsigned mode) override;
  std::string find_program(const std::string& name) override;
};

}  // namespace instanced::mounts
