#include "agent/disk/config.hpp"

#include <fmt/format.h>

namespace instanced {

std::optional<std::string> WatchedPath::validate() const {
  if (path.empty()) return std::string("path: must be set");
  return std::nullopt;
}

std::optional<std::string> DiskConfig::validate() const {
  if (auto repeat = check::first_repeat(paths, [](const WatchedPath& p) { return p.path; }, "paths")) return repeat;
  if (reboot_command.empty() || reboot_command.front().empty() || reboot_command.front().front() != '/')
    return std::string("reboot_command: must start with an absolute path");
  return std::nullopt;
}

}  // namespace instanced
