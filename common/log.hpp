// Logging: one spdlog logger per subsystem, all sharing the same sinks. Under systemd
// (JOURNAL_STREAM matches stderr, or INVOCATION_ID is set) records go to journald with
// SYSLOG_IDENTIFIER=instanced and INSTANCED_SUBSYSTEM=<name>; otherwise plain stderr lines.
// Loggers are owned by this object, never by spdlog's global registry.
#pragma once

#include <array>
#include <chrono>
#include <initializer_list>
#include <optional>
#include <utility>
#include <memory>
#include <spdlog/logger.h>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

enum class LogLevel { trace, debug, info, warn, error };
template <>
struct EnumNames<LogLevel> {
  static constexpr std::array<std::string_view, 5> names{"trace", "debug", "info", "warn", "error"};
};
std::string_view to_string(LogLevel level);

using Logger = std::shared_ptr<spdlog::logger>;

// One journal field of a record: the entity concerned (INSTANCED_JOB=ID) or the event's
// MESSAGE_ID (common/message_ids.hpp).
struct LogField {
  std::string_view name;
  std::string_view value;
};

// Journal fields for the records written on this thread while it lives (scopes nest):
//   LogFields f{{"MESSAGE_ID", msgid::kJobFinished}, {"INSTANCED_JOB", id}};
//   log_->info("job {} succeeded", id);
// The values are not copied: they must outlive the scope. On stderr the fields are not
// shown (the message names its entity). Never hold one across a co_await: the scope is the
// thread's, and another coroutine's records would carry its fields meanwhile.
class LogFields {
 public:
  LogFields(std::initializer_list<LogField> fields);
  ~LogFields();
  LogFields(const LogFields&) = delete;
  LogFields& operator=(const LogFields&) = delete;

  // Every field in force on this thread, outer scopes first.
  static void append_current(std::vector<std::pair<std::string_view, std::string_view>>& out);

 private:
  std::vector<LogField> fields_;
  const LogFields* outer_;
};

// A token bucket: `rate` a second, at most `burst` at once. I/O-free (the caller passes the time).
class RateLimit {
 public:
  using time_point = std::chrono::steady_clock::time_point;
  RateLimit(double rate, double burst) : rate_(rate), burst_(burst), tokens_(burst) {}
  bool take(time_point now);

 private:
  double rate_, burst_, tokens_;
  std::optional<time_point> last_;
};

enum class LogTarget { automatic, stderr_lines, journald };

class Logging {
 public:
  explicit Logging(LogTarget target = LogTarget::automatic, LogLevel level = LogLevel::info,
                   std::string journal_socket = "/run/systemd/journal/socket");

  // The logger of one subsystem ("status", "daemon", ...); created on first use.
  Logger get(const std::string& subsystem);
  void set_level(LogLevel level);
  LogLevel level() const { return level_; }
  bool journald() const { return journald_; }

  static bool under_systemd();

  // A line of a workload's output (a setup script's, a job's) for the journal: under its
  // own SYSLOG_IDENTIFIER (instanced-setup, instanced-job) with the entity's field, and at
  // most kWorkloadLinesPerSecond (burst kWorkloadLineBurst) for all workloads together, so
  // that a noisy script cannot use up the unit's journal rate limit (journald's default:
  // 10000 records in 30 s) and silence the agent's own records. Lines over the limit are
  // counted, not sent, and the count is logged when lines flow again (at most every 10 s); the run log keeps
  // every line. On stderr: "[entity] line" through `logger`.
  void workload_line(const Logger& logger, spdlog::level::level_enum level, std::string_view identifier,
                     LogField entity, std::string_view line);
  static constexpr double kWorkloadLinesPerSecond = 50;
  static constexpr double kWorkloadLineBurst = 500;

 private:
  std::vector<spdlog::sink_ptr> sinks_;
  std::vector<Logger> loggers_;
  LogLevel level_;
  bool journald_ = false;
  RateLimit workload_rate_{kWorkloadLinesPerSecond, kWorkloadLineBurst};
  std::uint64_t workload_dropped_ = 0;
  std::optional<std::chrono::steady_clock::time_point> dropped_reported_;
};

spdlog::level::level_enum to_spdlog(LogLevel level);

}  // namespace instanced
