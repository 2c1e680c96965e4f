#include "agent/setup/config.hpp"

#include <fmt/format.h>

namespace instanced {

std::optional<std::string> ScriptConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  if (path.empty() == content.empty()) return fmt::format("script '{}': set exactly one of 'path' and 'content'", name);
  return std::nullopt;
}

std::optional<std::string> SetupConfig::validate() const {
  return check::first_repeat(scripts, [](const ScriptConfig& s) { return s.name; }, "scripts");
}

}  // namespace instanced
