// How one configured mount is mounted, as data: the helper's command line, the secrets'
// environment and files, what /proc/self/mountinfo shows once it is mounted, and how a
// helper's error output is classified. Pure functions, no side effects: the supervisor
// (mounts.hpp) carries the plan out.
#pragma once

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/mounts/config.hpp"

namespace instanced::mounts {

// The secrets of one mount, read from its key_file or sas_file. Never logged.
struct Secrets {
  std::string key;
  std::string sas;  // without a leading '?'
};

struct FileToWrite {
  std::string path;
  std::string content;  // may hold secrets: written with mode 0600
};

// The resolved helper programs (absolute paths; empty: not installed).
struct Tools {
  std::string mount_cifs;
  std::string smbclient;
  std::string blobfuse2;
  std::string rclone;
  bool rclone_devname = true;  // its mount knows --devname (rclone 1.54 and later; Debian 11 has 1.53)
};

struct MountPlan {
  std::string driver;              // "cifs", "blobfuse2", "rclone"
  std::vector<std::string> argv;   // no secrets, ever
  std::vector<std::string> env;    // added to the helper's environment; may hold secrets
  std::vector<FileToWrite> files;  // written (0600) before the helper runs
  std::string source;              // mountinfo's source field once mounted
  std::string fstype;              // mountinfo's type field once mounted
  bool stays_running = false;      // a FUSE server: the helper is the file system
  std::string cache_dir;           // created before mounting (FUSE drivers)
  // SMB: the server checked for TCP reachability, and the credentials pre-check.
  std::string host;
  unsigned port = 0;
  std::vector<std::string> precheck_argv;  // empty: no pre-check
};

// The driver a blob mount uses: its own setting, or blobfuse2 when installed, else rclone.
BlobDriver choose_driver(const MountConfig& m, const Tools& tools);

// Error: what is missing (the helper program is not installed).
Result<MountPlan> plan_mount(const MountConfig& m, const StorageConfig& storage, const Secrets& secrets,
                             const Tools& tools, const std::string& secrets_dir);

// blobfuse2's YAML configuration for a blob mount (setup/baseConfig.yaml's schema).
std::string blobfuse2_config(const MountConfig& m, const StorageConfig& storage, const Secrets& secrets);

// The blob service URL of a mount: `endpoint`, or https://ACCOUNT.blob.SUFFIX.
std::string blob_endpoint(const MountConfig& m);

// Why a mount failed, as the platform wants it told apart.
enum class Reason { none, port_blocked, unreachable, auth_failed, not_found, no_kernel_support, driver_missing,
                    timed_out, busy, stale, hung, other };
std::string_view to_string(Reason r);
// Classifies a helper's output (mount.cifs, smbclient, rclone, blobfuse2) and exit.
Reason classify_output(std::string_view output);

// One line of /proc/self/mountinfo.
struct MountEntry {
  std::string mount_point;
  std::string fstype;
  std::string source;
};
std::vector<MountEntry> parse_mountinfo(std::string_view text);
// The last entry at `mount_point` (the one on top), if any.
std::optional<MountEntry> find_mount(const std::vector<MountEntry>& entries, std::string_view mount_point);
bool matches(const MountPlan& plan, const MountEntry& entry);

}  // namespace instanced::mounts
