// The configuration: the aggregate of every subsystem's section. Each section (its struct,
// defaults, checks and docs reference) lives beside its subsystem in agent/<name>/config.hpp;
// common/config_yaml.hpp is the machinery that reads, checks and writes them. Every key is
// declared once, in its struct's visit(), which drives parsing, validation, the
// effective-config dump (--check-config) and the unknown-key check. docs/configuration.md
// documents each key.
#pragma once

#include <chrono>
#include <filesystem>
#include <map>
#include <string>
#include <vector>

#include "agent/apps/config.hpp"
#include "agent/control/config.hpp"
#include "agent/disk/config.hpp"
#include "agent/gpu/config.hpp"
#include "agent/idle/config.hpp"
#include "agent/diagnostics/config.hpp"
#include "agent/update/config.hpp"
#include "common/proxy_config.hpp"
#include "agent/inventory/config.hpp"
#include "agent/jobs/config.hpp"
#include "agent/mounts/config.hpp"
#include "agent/power/config.hpp"
#include "agent/setup/config.hpp"
#include "agent/ssh/config.hpp"
#include "agent/status/config.hpp"
#include "common/config_schema.hpp"
#include "common/log.hpp"
#include "common/result.hpp"
#include "common/services.hpp"

namespace instanced {

namespace config_yaml {
struct ReplacedDropin;  // common/config_yaml.hpp
}  // namespace config_yaml

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

struct ShutdownConfig {
  // Must stay below the unit's TimeoutStopSec (30s) so systemd never has to SIGKILL us.
  Duration timeout = std::chrono::seconds(20);

  template <class V>
  void visit(V& v) {
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(5)));
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
  ProxyConfig proxy;
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
  InventoryConfig inventory;
  DiagnosticsConfig diagnostics;
  UpdateConfig update;
  DebugConfig debug;

  template <class V>
  void visit(V& v) {
    v("instance", instance);
    v("state_dir", state_dir, check::absolute_path());
    v("log", log);
    v("status", status);
    v("shutdown", shutdown);
    v("control", control);
    v("proxy", proxy);
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
    v("inventory", inventory);
    v("diagnostics", diagnostics);
    v("update", update);
    v("debug", debug);
  }
};

struct LoadedConfig {
  Config config;
  std::filesystem::path file;                 // the main file
  std::vector<std::filesystem::path> dropins; // applied in this order
  std::string hash;                           // sha256 over the files' names and bytes
  // Each setting a file made (dotted key path) and the file that made it last; a key
  // absent here has its default.
  std::map<std::string, std::filesystem::path> origins;
};

// The effective configuration as YAML (secrets as ***), then, as comments, each key a
// file set and the file it came from.
std::string dump_config_with_origins(const LoadedConfig& loaded);

inline constexpr const char* kDefaultConfigPath = "/etc/instanced/instanced.yaml";

// Loads FILE, then FILE.d/*.yaml in name order, each overriding the keys it sets.
// On failure the error message lists every problem, one per line, as
// "file:line:column: key: message".
Result<LoadedConfig> load_config(const std::filesystem::path& file,
                                 const config_yaml::ReplacedDropin* replaced = nullptr);
// The same from text, for tests and the fuzzer; `name` is used in messages.
Result<Config> parse_config_text(std::string_view text, std::string_view name);
// The effective configuration as YAML, secrets shown as ***.
std::string dump_config(const Config& config);

// The files the configuration names whose contents are secret (the control plane's token,
// the proxy's credentials, storage keys and SAS tokens, the applications' tokens): what a diagnostics bundle must
// not contain.
std::vector<std::string> secret_files(const Config& config);

}  // namespace instanced
