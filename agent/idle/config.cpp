#include "agent/idle/config.hpp"

#include <fmt/format.h>

#include "common/cron.hpp"

namespace instanced {

std::optional<std::string> ScheduleConfig::validate() const {
  if (auto parsed = cron::parse_schedules(time_zone, stop, start); !parsed) return parsed.error().message;
  if (warn_before.count() > 0 && (wall.empty() || wall.front().empty() || wall.front().front() != '/'))
    return std::string("wall: must start with an absolute path (or set warn_before: 0)");
  return std::nullopt;
}

}  // namespace instanced
