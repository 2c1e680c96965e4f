// Logging: one spdlog logger per subsystem, all sharing the same sinks. Under systemd
// (JOURNAL_STREAM matches stderr, or INVOCATION_ID is set) records go to journald with
// SYSLOG_IDENTIFIER=instanced and INSTANCED_SUBSYSTEM=<name>; otherwise plain stderr lines.
// Loggers are owned by this object, never by spdlog's global registry.
#pragma once

#include <array>
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

 private:
  std::vector<spdlog::sink_ptr> sinks_;
  std::vector<Logger> loggers_;
  LogLevel level_;
  bool journald_ = false;
};

spdlog::level::level_enum to_spdlog(LogLevel level);

}  // namespace instanced
