// What the agent remembers about setup scripts across restarts: state_dir/setup/state.json,
// written crash-safely after every change (a run is recorded as running before its process
// starts, so a crash can never hide a run).
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/run_log.hpp"
#include "agent/setup/config.hpp"
#include "common/result.hpp"

namespace instanced::setup {

enum class ScriptState { pending, running, succeeded, failed, timed_out, interrupted };
std::string_view to_string(ScriptState s);
std::optional<ScriptState> parse_state(std::string_view s);

struct RunRecord {
  std::string run_id;   // also the INSTANCED_RUN_ID marker in the script's environment
  std::string boot_id;  // the boot it ran in
  std::string started;  // RFC 3339
  std::string ended;
  double duration_seconds = 0;
  std::optional<int> exit_code;
  int signal = 0;
  std::string reason;  // why it failed, for people
  std::string log;     // the run's log file
  LogLayout layout;
  std::vector<int> leftovers;  // processes the script left behind (kept or killed)
};

struct ScriptRecord {
  ScriptState state = ScriptState::pending;
  std::uint64_t runs = 0;
  RunRecord last;
};

struct Records {
  std::map<std::string, ScriptRecord> scripts;

  std::string to_json() const;
  // An error names the file's problem ("scripts.x.state: 'bogus' is not a state").
  static Result<Records> parse(std::string_view text);
};

boost::json::object to_json(const RunRecord& r);

}  // namespace instanced::setup
