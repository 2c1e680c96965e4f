// The agent's record of its own run, state_dir/agent/run.json: written at start, marked
// clean at a clean stop. Found at the next start, it says the previous run ended otherwise (a crash,
// kill -9, the watchdog, power loss). Under systemd, ExecStopPost runs `instanced
// --record-exit`, which adds how it ended from $SERVICE_RESULT, $EXIT_CODE and $EXIT_STATUS.
#pragma once

#include <boost/json/object.hpp>
#include <filesystem>
#include <optional>
#include <string>

#include "common/fs.hpp"

namespace instanced {

std::filesystem::path run_record_path(const std::string& state_dir);

// What this run writes at start.
boost::json::object run_record(const std::string& version, const std::string& started_at, const std::string& boot_id);

// What a clean stop writes over it.
boost::json::object clean_stop_record(const boost::json::object& run, const std::string& stopped_at);

// The previous run, if it did not stop cleanly: a message and the event's data.
struct PreviousRun {
  std::string message;
  boost::json::object data;
};
std::optional<PreviousRun> previous_unclean_run(Filesystem& fs, const std::filesystem::path& record,
                                                const std::string& boot_id);

// `instanced --record-exit`: adds systemd's account of the end to a record that a clean
// stop did not mark. Returns the exit status for the command.
int record_exit(Filesystem& fs, const std::filesystem::path& record);

}  // namespace instanced
