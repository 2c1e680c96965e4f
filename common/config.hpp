// Typed configuration. YAML is parsed and validated here, in one place, into these plain
// structs; subsystems receive their struct, never a YAML node. Every key is declared once,
// in the struct's visit() function, which drives parsing, validation, the effective-config
// dump (--check-config) and the unknown-key check. docs/configuration.md documents each key.
#pragma once

#include <array>
#include <chrono>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"
#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced {

enum class LogLevel { trace, debug, info, warn, error };
template <>
struct EnumNames<LogLevel> {
  static constexpr std::array<std::string_view, 5> names{"trace", "debug", "info", "warn", "error"};
};

struct InstanceConfig {
  std::string name;  // empty: the host name

  template <class V>
  void visit(V& v) {
    v("name", name, check::max_length(253));
  }
};

struct LogConfig {
  LogLevel level = LogLevel::info;

  template <class V>
  void visit(V& v) {
    v("level", level);
  }
};

struct StatusConfig {
  std::string socket = "/run/instanced/status.sock";
  std::string group = "instanced-ops";
  FileMode mode{0660};
  std::int64_t max_connections = 256;
  std::int64_t max_connections_per_process = 16;
  ByteSize max_header_bytes{8 * 1024};
  ByteSize max_body_bytes{64 * 1024};
  Duration request_timeout = std::chrono::seconds(10);

  template <class V>
  void visit(V& v) {
    v("socket", socket, check::absolute_path());
    v("group", group, check::not_empty());
    v("mode", mode);
    v("max_connections", max_connections, check::range<std::int64_t>(1, 10000));
    v("max_connections_per_process", max_connections_per_process, check::range<std::int64_t>(1, 10000));
    v("max_header_bytes", max_header_bytes, check::size_range(ByteSize{512}, ByteSize{1 << 20}));
    v("max_body_bytes", max_body_bytes, check::size_range(ByteSize{0}, ByteSize{16 << 20}));
    v("request_timeout", request_timeout,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(10)));
  }
};

struct ShutdownConfig {
  // Must stay below the unit's TimeoutStopSec (30s) so systemd never has to SIGKILL us.
  Duration timeout = std::chrono::seconds(20);

  template <class V>
  void visit(V& v) {
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(5)));
  }
};

struct ControlConfig {
  // wss://host[:port]/path of the control plane. Empty: the channel is off.
  std::string endpoint;
  bool insecure = false;  // allow ws:// (local development only)
  std::string token_file = "/etc/instanced/control-token";
  std::string ca_file;  // empty: the system CA store
  // http://host:port of an HTTP CONNECT proxy. Empty: https_proxy / http_proxy from the
  // environment, minus the hosts in no_proxy.
  std::string proxy;
  Duration heartbeat_interval = std::chrono::seconds(10);
  Duration ping_interval = std::chrono::seconds(20);
  Duration connect_timeout = std::chrono::seconds(15);
  Duration backoff_initial = std::chrono::seconds(1);
  Duration backoff_max = std::chrono::minutes(5);
  Duration backoff_reset_after = std::chrono::seconds(60);
  Duration initial_delay_max = std::chrono::seconds(5);
  // After an established connection drops (a control-plane restart drops the whole fleet
  // at once), retries until the next connection are drawn from [0, reconnect_spread]
  // (or the backoff's draw, when larger), so the fleet comes back spread out.
  Duration reconnect_spread = std::chrono::seconds(10);
  ByteSize max_message_bytes{1 << 20};
  std::int64_t max_json_depth = 32;
  ByteSize outbox_max_bytes{64ULL << 20};
  std::int64_t replay_per_second = 200;

  template <class V>
  void visit(V& v) {
    v("endpoint", endpoint, check::max_length(2048));
    v("insecure", insecure);
    v("token_file", token_file, check::absolute_path());
    v("ca_file", ca_file);
    v("proxy", proxy, check::max_length(2048));
    v("heartbeat_interval", heartbeat_interval,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("ping_interval", ping_interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("connect_timeout", connect_timeout,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(5)));
    v("backoff_initial", backoff_initial,
      check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("backoff_max", backoff_max, check::duration_range(std::chrono::milliseconds(10), std::chrono::hours(2)));
    v("backoff_reset_after", backoff_reset_after,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(1)));
    v("initial_delay_max", initial_delay_max,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(30)));
    v("reconnect_spread", reconnect_spread,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(30)));
    v("max_message_bytes", max_message_bytes, check::size_range(ByteSize{1024}, ByteSize{64 << 20}));
    v("max_json_depth", max_json_depth, check::range<std::int64_t>(4, 256));
    v("outbox_max_bytes", outbox_max_bytes, check::size_range(ByteSize{64 << 10}, ByteSize{16ULL << 30}));
    v("replay_per_second", replay_per_second, check::range<std::int64_t>(1, 100000));
  }
};

// ---- setup scripts (docs/setup.md) -----------------------------------------------------

enum class ScriptWhen { create, start };
template <>
struct EnumNames<ScriptWhen> {
  static constexpr std::array<std::string_view, 2> names{"create", "start"};
};
// What happens to processes a script left behind (daemons it started) when it exits.
enum class Leftovers { keep, kill };
template <>
struct EnumNames<Leftovers> {
  static constexpr std::array<std::string_view, 2> names{"keep", "kill"};
};
// A script that was running when the agent died: run it again, or mark it failed.
enum class OnInterrupt { fail, rerun };
template <>
struct EnumNames<OnInterrupt> {
  static constexpr std::array<std::string_view, 2> names{"fail", "rerun"};
};

struct ScriptConfig {
  std::string name;
  ScriptWhen when = ScriptWhen::start;
  std::string path;       // an executable file, or:
  MultilineText content;  // the script itself (run directly with a #! line, else with /bin/sh)
  std::vector<std::string> args;
  std::map<std::string, std::string> environment;
  std::string working_directory;  // empty: the user's home directory
  std::string user = "root";
  Duration timeout = std::chrono::minutes(30);
  bool continue_on_error = false;
  Leftovers leftover_processes = Leftovers::keep;

  template <class V>
  void visit(V& v) {
    v("name", name, check::identifier());
    v("when", when);
    v("path", path, check::absolute_path_or_empty());
    v("content", content);
    v("args", args);
    v("environment", environment, check::environment_names());
    v("working_directory", working_directory, check::absolute_path_or_empty());
    v("user", user, check::not_empty(), check::max_length(32));
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24)));
    v("continue_on_error", continue_on_error);
    v("leftover_processes", leftover_processes);
  }
  std::optional<std::string> validate() const;
};

struct SetupConfig {
  std::string log_dir = "/var/log/instanced/setup";  // one log file per script run
  ByteSize max_log_bytes{10 << 20};                  // per run: the head and the tail are kept
  std::int64_t tail_lines = 100;                      // last lines sent with the result event
  Duration kill_grace = std::chrono::seconds(10);     // SIGTERM, then SIGKILL after this
  OnInterrupt interrupted = OnInterrupt::fail;
  Duration stop_wait = std::chrono::seconds(60);      // prepare_stop waits this long for a running script
  std::vector<ScriptConfig> scripts;                  // run in this order

  template <class V>
  void visit(V& v) {
    v("log_dir", log_dir, check::absolute_path());
    v("max_log_bytes", max_log_bytes, check::size_range(ByteSize{4 << 10}, ByteSize{1ULL << 30}));
    v("tail_lines", tail_lines, check::range<std::int64_t>(0, 1000));
    v("kill_grace", kill_grace, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(5)));
    v("interrupted", interrupted);
    v("stop_wait", stop_wait, check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(30)));
    v("scripts", scripts);
  }
  std::optional<std::string> validate() const;
};

// ---- disk guardian (docs/disk.md) -------------------------------------------------------

struct WatchedPath {
  std::string path;
  Threshold low{10ULL << 30, -1};   // below this free: `low`
  Threshold recovery{0, -1};        // below this free: `recovery_required` (0: never)
  Threshold inodes_low{0, 5};       // free inodes below this (count or %): `low`
  Threshold inodes_recovery{0, 1};  // and below this: `recovery_required`, where `recovery` is set

  template <class V>
  void visit(V& v) {
    v("path", path, check::absolute_path());
    v("low", low);
    v("recovery", recovery);
    v("inodes_low", inodes_low);
    v("inodes_recovery", inodes_recovery);
  }
  std::optional<std::string> validate() const;
};

// When reclaim runs by itself: never, on entering `low` (or worse), or on entering
// `recovery_required` only.
enum class AutoReclaim { off, low, recovery_required };
template <>
struct EnumNames<AutoReclaim> {
  static constexpr std::array<std::string_view, 3> names{"off", "low", "recovery_required"};
};

// One reclaim rule: off unless enabled. Which keys mean something depends on the rule
// (docs/disk.md): `paths` for the file rules, `older_than` for tmp, `max_size` for journal.
struct ReclaimRule {
  bool enabled = false;
  std::vector<std::string> paths;
  Duration older_than = std::chrono::hours(24 * 7);
  ByteSize max_size{512 << 20};

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("paths", paths);
    v("older_than", older_than, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24 * 3650)));
    v("max_size", max_size);
  }
};

struct ReclaimConfig {
  AutoReclaim automatic = AutoReclaim::off;
  ReclaimRule pip_cache;
  ReclaimRule conda_cache;
  ReclaimRule apt_archives{false, {"/var/cache/apt/archives"}};
  ReclaimRule journal;
  ReclaimRule tmp{false, {"/tmp", "/var/tmp"}};
  ReclaimRule core_dumps{false, {"/var/lib/systemd/coredump", "/var/crash"}};
  ReclaimRule containers;
  ReclaimRule blob_cache;

  template <class V>
  void visit(V& v) {
    v("automatic", automatic);
    v("pip_cache", pip_cache);
    v("conda_cache", conda_cache);
    v("apt_archives", apt_archives);
    v("journal", journal);
    v("tmp", tmp);
    v("core_dumps", core_dumps);
    v("containers", containers);
    v("blob_cache", blob_cache);
  }
};

struct DiskConfig {
  Duration interval = std::chrono::seconds(10);
  ByteSize margin{512 << 20};                  // leaving a state needs this much more free ...
  Duration hold = std::chrono::seconds(30);    // ... for this long
  // `/` by the platform's numbers; /mnt (the temp disk) and /tmp (a small tmpfs on some
  // images) by share, since their sizes vary.
  std::vector<WatchedPath> paths{{"/", {10ULL << 30, -1}, {5ULL << 30, -1}, {0, 5}, {0, 1}},
                                 {"/mnt", {0, 10}, {0, -1}, {0, 5}, {0, 1}},
                                 {"/tmp", {0, 10}, {0, -1}, {0, 5}, {0, 1}}};
  std::string scan_root = "/";  // what "largest consumers" looks at (this file system only)
  std::int64_t scan_top = 20;
  std::int64_t scan_threads = 2;
  std::vector<std::string> reboot_command{"/usr/bin/systemctl", "reboot"};
  ReclaimConfig reclaim;

  template <class V>
  void visit(V& v) {
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("margin", margin);
    v("hold", hold, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(1)));
    v("paths", paths);
    v("scan_root", scan_root, check::absolute_path());
    v("scan_top", scan_top, check::range<std::int64_t>(1, 1000));
    v("scan_threads", scan_threads, check::range<std::int64_t>(1, 64));
    v("reboot_command", reboot_command);
    v("reclaim", reclaim);
  }
  std::optional<std::string> validate() const;
};

// ---- storage mounts (docs/mounts.md) ---------------------------------------------------

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
  bool unmount_on_stop = true;
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

// ---- GPU and CUDA health (docs/gpu.md) ----------------------------------------------------

struct GpuConfig {
  bool enabled = true;
  std::string library = "libnvidia-ml.so.1";  // found by the dynamic loader's search (ld.so.conf, LD_LIBRARY_PATH)
  Duration interval = std::chrono::seconds(10);
  Duration call_timeout = std::chrono::seconds(5);  // an NVML call not back by then: the driver is stuck
  std::string kmsg = "/dev/kmsg";                   // where XID lines are read; empty: not read
  std::vector<std::string> cuda_roots{"/usr/local"};  // folders holding cuda-X.Y toolkits
  std::vector<std::string> include_dirs{"/usr/include", "/usr/include/x86_64-linux-gnu"};  // cudnn_version.h, nccl.h
  Duration inventory_interval = std::chrono::minutes(10);

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("library", library, check::not_empty(), check::max_length(4096));
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("call_timeout", call_timeout, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("kmsg", kmsg, check::absolute_path_or_empty());
    v("cuda_roots", cuda_roots);
    v("include_dirs", include_dirs);
    v("inventory_interval", inventory_interval, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24)));
  }
};

// ---- job queue (docs/jobs.md) ----------------------------------------------------------

// The container CLI for jobs that name an image: the first of podman and docker found
// (auto), one of them, or none (jobs with an image are refused).
enum class ContainerRuntime { automatic, podman, docker, none };
template <>
struct EnumNames<ContainerRuntime> {
  static constexpr std::array<std::string_view, 4> names{"auto", "podman", "docker", "none"};
};

struct JobsConfig {
  bool enabled = true;
  std::int64_t slots = 0;  // jobs running at once; 0: two per online CPU
  std::int64_t max_queued = 100000;  // submissions beyond this are refused
  std::int64_t keep_finished = 1000;  // finished jobs remembered (state and log), newest kept
  std::string user = "root";  // the user of jobs that name none
  std::string log_dir = "/var/log/instanced/jobs";
  ByteSize max_log_bytes{64 << 20};  // per job: the head and the tail are kept
  std::int64_t tail_lines = 20;      // last lines sent with the job_finished event
  Duration default_timeout = std::chrono::hours(24);
  Duration max_timeout = std::chrono::hours(24 * 7);
  Duration kill_grace = std::chrono::seconds(10);  // SIGTERM (or `kill`), then SIGKILL after this
  Duration stop_wait = std::chrono::minutes(5);    // prepare_stop waits this long for running jobs
  Duration drain_hold = std::chrono::minutes(10);  // after prepare_stop: no new job starts for this long
  ContainerRuntime runtime = ContainerRuntime::automatic;
  std::string podman = "podman";  // programs: bare names are looked up on PATH
  std::string docker = "docker";
  std::vector<std::string> container_options;  // more options for every `run`
  // Limits of process jobs (containers get the runtime's): 0 is no limit.
  ByteSize memory_limit{0};            // address space (RLIMIT_AS)
  std::int64_t max_open_files = 0;     // RLIMIT_NOFILE
  std::int64_t max_processes = 0;      // RLIMIT_NPROC (per user)

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("slots", slots, check::range<std::int64_t>(0, 4096));
    v("max_queued", max_queued, check::range<std::int64_t>(1, 1000000));
    v("keep_finished", keep_finished, check::range<std::int64_t>(0, 1000000));
    v("user", user, check::not_empty(), check::max_length(32));
    v("log_dir", log_dir, check::absolute_path());
    v("max_log_bytes", max_log_bytes, check::size_range(ByteSize{4 << 10}, ByteSize{1ULL << 34}));
    v("tail_lines", tail_lines, check::range<std::int64_t>(0, 1000));
    v("default_timeout", default_timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24 * 365)));
    v("max_timeout", max_timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24 * 365)));
    v("kill_grace", kill_grace, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("stop_wait", stop_wait, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(24)));
    v("drain_hold", drain_hold, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(24)));
    v("runtime", runtime);
    v("podman", podman, check::not_empty(), check::max_length(4096));
    v("docker", docker, check::not_empty(), check::max_length(4096));
    v("container_options", container_options);
    v("memory_limit", memory_limit);
    v("max_open_files", max_open_files, check::range<std::int64_t>(0, 1 << 30));
    v("max_processes", max_processes, check::range<std::int64_t>(0, 1 << 22));
  }
  std::optional<std::string> validate() const;
};

// ---- workstation services (docs/workstation.md) ---------------------------------------

// The service manager: systemctl, found on PATH unless a path is given.
struct ServicesConfig {
  std::string systemctl = "systemctl";
  Duration timeout = std::chrono::seconds(30);  // one systemctl call

  template <class V>
  void visit(V& v) {
    v("systemctl", systemctl, check::not_empty(), check::max_length(4096));
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(10)));
  }
};

// One of the users' applications (Jupyter, RStudio Server, VS Code's server, nginx).
struct AppConfig {
  std::string name;
  std::string unit;       // its systemd unit: restarted through it when `restart` is on
  std::string process;    // a process of this name must run (its /proc comm, 15 characters)
  std::string url;        // http://127.0.0.1:PORT/PATH probed with GET
  std::int64_t expect_status = 200;
  std::string websocket;  // ws://127.0.0.1:PORT/PATH: a WebSocket handshake must succeed too
  bool jupyter = false;   // `url`'s server is Jupyter: /api/kernels and /api/terminals give activity
  std::string token_file; // Jupyter's token (a file, mode 0600)
  bool restart = false;   // restart the unit when down (rate-limited)
  bool operator==(const AppConfig&) const = default;

  template <class V>
  void visit(V& v) {
    v("name", name, check::identifier());
    v("unit", unit, check::max_length(256));
    v("process", process, check::max_length(15));
    v("url", url, check::max_length(2048));
    v("expect_status", expect_status, check::range<std::int64_t>(100, 599));
    v("websocket", websocket, check::max_length(2048));
    v("jupyter", jupyter);
    v("token_file", token_file, check::absolute_path_or_empty());
    v("restart", restart);
  }
  std::optional<std::string> validate() const;
};

struct AppsConfig {
  Duration interval = std::chrono::seconds(15);
  Duration timeout = std::chrono::seconds(5);      // one probe
  Duration slow = std::chrono::seconds(2);         // an answer slower than this is degraded
  std::int64_t down_after = 2;                     // failed probes in a row before down (and a restart)
  std::int64_t max_restarts = 3;                   // per app within restart_window
  Duration restart_window = std::chrono::minutes(30);
  std::vector<AppConfig> apps;

  template <class V>
  void visit(V& v) {
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(50), std::chrono::minutes(5)));
    v("slow", slow, check::duration_range(std::chrono::milliseconds(1), std::chrono::minutes(5)));
    v("down_after", down_after, check::range<std::int64_t>(1, 100));
    v("max_restarts", max_restarts, check::range<std::int64_t>(0, 100));
    v("restart_window", restart_window, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24)));
    v("apps", apps);
  }
  std::optional<std::string> validate() const;
};

// When the instance is idle: nothing active for `after` (docs/workstation.md#idle).
struct IdleConfig {
  bool enabled = true;
  Duration interval = std::chrono::seconds(60);  // how often activity is looked at
  Duration after = std::chrono::minutes(30);     // quiet this long: idle
  std::int64_t cpu_percent = 10;                 // busier than this (all CPUs) is activity
  std::int64_t gpu_percent = 5;                  // any GPU busier than this is activity
  std::string utmp = "/run/utmp";                // the login records (who(1) reads them)
  Duration shutdown_after = std::chrono::seconds(0);  // the platform's idle stop, for the warning; 0: none

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("after", after, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24 * 7)));
    v("cpu_percent", cpu_percent, check::range<std::int64_t>(0, 100));
    v("gpu_percent", gpu_percent, check::range<std::int64_t>(0, 100));
    v("utmp", utmp, check::absolute_path());
    v("shutdown_after", shutdown_after, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24 * 7)));
  }
};

// The instance's start/stop schedule (the control plane's; the agent shows and warns).
struct ScheduleConfig {
  std::string time_zone = "UTC";      // an IANA name: Europe/Berlin
  std::vector<std::string> stop;      // cron expressions: "MIN HOUR DAY MONTH WEEKDAY"
  std::vector<std::string> start;
  Duration warn_before = std::chrono::minutes(15);  // wall message to logged-in users; 0: none
  std::vector<std::string> wall = {"/usr/bin/wall"};

  template <class V>
  void visit(V& v) {
    v("time_zone", time_zone, check::not_empty(), check::max_length(64));
    v("stop", stop);
    v("start", start);
    v("warn_before", warn_before, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24)));
    v("wall", wall);
  }
  std::optional<std::string> validate() const;
};

// unmanaged: the agent leaves SSH alone; enabled/disabled: it keeps the unit so.
enum class SshPolicy { unmanaged, enabled, disabled };
template <>
struct EnumNames<SshPolicy> {
  static constexpr std::array<std::string_view, 3> names{"unmanaged", "enabled", "disabled"};
};

struct SshConfig {
  SshPolicy policy = SshPolicy::unmanaged;
  std::string unit = "ssh.service";
  Duration interval = std::chrono::seconds(60);  // how often drift is looked for

  template <class V>
  void visit(V& v) {
    v("policy", policy);
    v("unit", unit, check::not_empty(), check::max_length(256));
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24)));
  }
};

// Shutdowns from inside the VM (sudo shutdown, poweroff): reported as os_shutdown.
struct PowerConfig {
  bool logind = true;  // take a delay inhibitor lock and watch PrepareForShutdown on the system bus
  Duration report_wait = std::chrono::seconds(5);  // for the control plane's ack of os_shutdown

  template <class V>
  void visit(V& v) {
    v("logind", logind);
    v("report_wait", report_wait, check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(1)));
  }
};

struct DebugConfig {
  // Enables POST /v1/debug/stall (blocks the event loop) for the watchdog tests. Never in production.
  bool test_hooks = false;

  template <class V>
  void visit(V& v) {
    v("test_hooks", test_hooks);
  }
};

struct Config {
  InstanceConfig instance;
  std::string state_dir = "/var/lib/instanced";
  LogConfig log;
  StatusConfig status;
  ShutdownConfig shutdown;
  ControlConfig control;
  SetupConfig setup;
  DiskConfig disk;
  StorageConfig storage;
  GpuConfig gpu;
  JobsConfig jobs;
  ServicesConfig services;
  AppsConfig applications;
  IdleConfig idle;
  ScheduleConfig schedule;
  SshConfig ssh;
  PowerConfig power;
  DebugConfig debug;

  template <class V>
  void visit(V& v) {
    v("instance", instance);
    v("state_dir", state_dir, check::absolute_path());
    v("log", log);
    v("status", status);
    v("shutdown", shutdown);
    v("control", control);
    v("setup", setup);
    v("disk", disk);
    v("storage", storage);
    v("gpu", gpu);
    v("jobs", jobs);
    v("services", services);
    v("applications", applications);
    v("idle", idle);
    v("schedule", schedule);
    v("ssh", ssh);
    v("power", power);
    v("debug", debug);
  }
};

struct LoadedConfig {
  Config config;
  std::filesystem::path file;                 // the main file
  std::vector<std::filesystem::path> dropins; // applied in this order
  std::string hash;                           // sha256 over the files' names and bytes
};

inline constexpr const char* kDefaultConfigPath = "/etc/instanced/instanced.yaml";

// Loads FILE, then FILE.d/*.yaml in name order, each overriding the keys it sets.
// On failure the error message lists every problem, one per line, as
// "file:line:column: key: message".
Result<LoadedConfig> load_config(const std::filesystem::path& file);
// The same from text, for tests and the fuzzer; `name` is used in messages.
Result<Config> parse_config_text(std::string_view text, std::string_view name);
// The effective configuration as YAML, secrets shown as ***.
std::string dump_config(const Config& config);

std::string_view to_string(LogLevel level);

}  // namespace instanced
