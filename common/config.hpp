// Typed configuration. YAML is parsed and validated here, in one place, into these plain
// structs; subsystems receive their struct, never a YAML node. Every key is declared once,
// in the struct's visit() function, which drives parsing, validation, the effective-config
// dump (--check-config) and the unknown-key check. docs/configuration.md documents each key.
#pragma once

#include <array>
#include <chrono>
#include <filesystem>
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
  ByteSize max_header_bytes{8 * 1024};
  ByteSize max_body_bytes{64 * 1024};
  Duration request_timeout = std::chrono::seconds(10);

  template <class V>
  void visit(V& v) {
    v("socket", socket, check::absolute_path());
    v("group", group, check::not_empty());
    v("mode", mode);
    v("max_connections", max_connections, check::range<std::int64_t>(1, 10000));
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
  DebugConfig debug;

  template <class V>
  void visit(V& v) {
    v("instance", instance);
    v("state_dir", state_dir, check::absolute_path());
    v("log", log);
    v("status", status);
    v("shutdown", shutdown);
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
