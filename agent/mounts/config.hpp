// Storage mounts' settings (`storage:`, docs/mounts.md).
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

enum class MountType { azure_files, blob };
template <>
struct EnumNames<MountType> {
  static constexpr std::array<std::string_view, 2> names{"azure-files", "blob"};
};
// The FUSE driver of a blob mount; `auto`: blobfuse2 when installed, else rclone.
enum class BlobDriver { automatic, blobfuse2, rclone };
template <>
struct EnumNames<BlobDriver> {
  static constexpr std::array<std::string_view, 3> names{"auto", "blobfuse2", "rclone"};
};
// What a hung mount (a probe that does not return) gets: a lazy unmount and a remount, or
// only a report (a CIFS share often comes back by itself; a lazy unmount drops open files).
enum class OnHung { remount, report };
template <>
struct EnumNames<OnHung> {
  static constexpr std::array<std::string_view, 2> names{"remount", "report"};
};

struct MountConfig {
  std::string name;
  MountType type = MountType::azure_files;
  std::string account;      // the storage account
  std::string share;        // azure-files: the file share
  std::string container;    // blob: the container
  std::string mount_point;
  std::string key_file;     // a file holding the account key (mode 0600)
  std::string sas_file;     // blob: a file holding a SAS token (mode 0600)
  bool managed_identity = false;    // blob: the VM's managed identity
  std::string identity_client_id;   // ... a user-assigned identity's client id
  std::string identity_endpoint;    // ... a token endpoint other than the instance metadata service
  BlobDriver driver = BlobDriver::automatic;
  std::string endpoint_suffix = "core.windows.net";  // sovereign clouds: core.chinacloudapi.cn, ...
  std::string endpoint;     // explicit: azure-files HOST[:PORT]; blob an http(s) URL
  std::int64_t uid = 0;
  std::int64_t gid = 0;
  FileMode dir_mode{0755};
  FileMode file_mode{0644};
  std::vector<std::string> options;  // extra mount options (-o), no credentials
  bool required = true;     // gates setup scripts, jobs and the agent's health
  bool read_only = false;
  std::string smb_version = "3.1.1";
  bool write_probe = false; // the health probe also writes, reads back and deletes a hidden file
  ByteSize cache_size{10ULL << 30};  // blob: the local file cache's cap
  bool operator==(const MountConfig&) const = default;

  template <class V>
  void visit(V& v) {
    v("name", name, check::identifier());
    v("type", type);
    v("account", account);
    v("share", share);
    v("container", container);
    v("mount_point", mount_point, check::absolute_path());
    v("key_file", key_file, check::absolute_path_or_empty());
    v("sas_file", sas_file, check::absolute_path_or_empty());
    v("managed_identity", managed_identity);
    v("identity_client_id", identity_client_id, check::max_length(64));
    v("identity_endpoint", identity_endpoint);
    v("driver", driver);
    v("endpoint_suffix", endpoint_suffix, check::not_empty(), check::max_length(253));
    v("endpoint", endpoint, check::max_length(253));
    v("uid", uid, check::range<std::int64_t>(0, 4294967294));
    v("gid", gid, check::range<std::int64_t>(0, 4294967294));
    v("dir_mode", dir_mode);
    v("file_mode", file_mode);
    v("options", options);
    v("required", required);
    v("read_only", read_only);
    v("smb_version", smb_version);
    v("write_probe", write_probe);
    v("cache_size", cache_size, check::size_range(ByteSize{64 << 20}, ByteSize{64ULL << 40}));
  }
  std::optional<std::string> validate() const;
};

struct StorageConfig {
  Duration probe_interval = std::chrono::seconds(30);
  Duration probe_timeout = std::chrono::seconds(5);   // a probe not back by then: `hung`
  Duration slow_probe = std::chrono::seconds(1);      // a probe slower than this: `degraded`
  Duration connect_timeout = std::chrono::seconds(3); // the TCP check of the SMB port
  Duration mount_timeout = std::chrono::seconds(60);
  Duration unmount_timeout = std::chrono::seconds(30);  // syncfs and unmount, each
  Duration backoff_initial = std::chrono::seconds(2);   // between failed mount attempts,
  Duration backoff_max = std::chrono::minutes(5);       // doubling up to this
  Duration drain_hold = std::chrono::minutes(10);       // after prepare_stop: no remount for this long
  OnHung on_hung = OnHung::remount;
  bool unmount_on_stop = false;  // mounts (and their drivers, under monitors) outlive the agent
  std::string cache_dir = "/mnt/instanced/blob-cache";  // on the temp disk, never on /
  // The helper programs: a bare name is looked up on PATH.
  std::string mount_cifs = "mount.cifs";
  std::string smbclient = "smbclient";  // the credentials pre-check (skipped when absent)
  std::string blobfuse2 = "blobfuse2";
  std::string rclone = "rclone";
  std::vector<MountConfig> mounts;

  template <class V>
  void visit(V& v) {
    auto d = check::duration_range(std::chrono::milliseconds(10), std::chrono::hours(1));
    v("probe_interval", probe_interval, d);
    v("probe_timeout", probe_timeout, d);
    v("slow_probe", slow_probe, d);
    v("connect_timeout", connect_timeout, d);
    v("mount_timeout", mount_timeout, d);
    v("unmount_timeout", unmount_timeout, d);
    v("backoff_initial", backoff_initial, d);
    v("backoff_max", backoff_max, d);
    v("drain_hold", drain_hold, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(24)));
    v("on_hung", on_hung);
    v("unmount_on_stop", unmount_on_stop);
    v("cache_dir", cache_dir, check::absolute_path());
    v("mount_cifs", mount_cifs, check::not_empty());
    v("smbclient", smbclient, check::not_empty());
    v("blobfuse2", blobfuse2, check::not_empty());
    v("rclone", rclone, check::not_empty());
    v("mounts", mounts);
  }
  std::optional<std::string> validate() const;
};

}  // namespace instanced
