// Setup scripts' settings (`setup:`, docs/setup.md).
#pragma once

#include <array>
#include <map>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

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

}  // namespace instanced
