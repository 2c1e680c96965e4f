#include "agent/jobs/config.hpp"

#include <fmt/format.h>

namespace instanced {

std::optional<std::string> JobsConfig::validate() const {
  if (default_timeout > max_timeout)
    return fmt::format("default_timeout: {} is longer than max_timeout ({})", format_duration(default_timeout),
                       format_duration(max_timeout));
  return std::nullopt;
}

}  // namespace instanced
