#include "agent/daemon/cli.hpp"

#include <fmt/format.h>

namespace instanced {

std::string usage_text() {
  return fmt::format(
      "usage: instanced [--config FILE] [--check-config] [--record-exit] [--log-level LEVEL] [--version] [--help]\n"
      "\n"
      "  --config FILE      configuration file (default {}); FILE.d/*.yaml are merged in name order\n"
      "  --check-config     validate the configuration, print it with secrets redacted, and exit\n"
      "  --record-exit      for the unit's ExecStopPost: add how the run ended ($SERVICE_RESULT,\n"
      "                     $EXIT_CODE, $EXIT_STATUS) to its run record, if it did not stop cleanly\n"
      "  --log-level LEVEL  trace, debug, info, warn or error; overrides log.level\n"
      "  --version          print the version and exit\n"
      "  --help             print this help and exit\n",
      kDefaultConfigPath);
}

Result<Options> parse_command_line(const std::vector<std::string>& args) {
  Options o;
  for (std::size_t i = 0; i < args.size(); ++i) {
    std::string arg = args[i];
    std::optional<std::string> inline_value;
    if (auto eq = arg.find('='); arg.starts_with("--") && eq != std::string::npos) {
      inline_value = arg.substr(eq + 1);
      arg = arg.substr(0, eq);
    }
    auto value = [&]() -> Result<std::string> {
      if (inline_value) return *inline_value;
      if (i + 1 >= args.size()) return Error{fmt::format("{} needs a value", arg)};
      return args[++i];
    };
    auto no_value = [&]() -> Result<void> {
      if (inline_value) return Error{fmt::format("{} takes no value", arg)};
      return {};
    };
    if (arg == "--config" || arg == "-c") {
      auto v = value();
      if (!v) return v.error();
      if (v->empty()) return Error{"--config needs a file name"};
      o.config_file = *v;
    } else if (arg == "--log-level") {
      auto v = value();
      if (!v) return v.error();
      o.log_level = enum_from_name<LogLevel>(*v);
      if (!o.log_level)
        return Error{fmt::format("--log-level: '{}' is not one of: {}", *v, fmt::join(EnumNames<LogLevel>::names, ", "))};
    } else if (arg == "--record-exit") {
      if (auto r = no_value(); !r) return r.error();
      o.record_exit = true;
    } else if (arg == "--check-config") {
      if (auto r = no_value(); !r) return r.error();
      o.check_config = true;
    } else if (arg == "--version") {
      if (auto r = no_value(); !r) return r.error();
      o.version = true;
    } else if (arg == "--help" || arg == "-h") {
      o.help = true;
    } else {
      return Error{fmt::format("unknown argument '{}'", args[i])};
    }
  }
  return o;
}

}  // namespace instanced
