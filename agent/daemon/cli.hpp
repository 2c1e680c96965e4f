// instanced's command line.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/config/config.hpp"
#include "common/result.hpp"

namespace instanced {

struct Options {
  std::string config_file = kDefaultConfigPath;
  bool check_config = false;
  bool record_exit = false;  // ExecStopPost: how the run ended, from systemd's environment
  bool version = false;
  bool help = false;
  std::optional<LogLevel> log_level;  // overrides log.level, also across reloads
};

// Parses argv; an Error means usage must be printed and the exit status is 2.
Result<Options> parse_command_line(const std::vector<std::string>& args);
std::string usage_text();

}  // namespace instanced
