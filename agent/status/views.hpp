// The agent-wide views of the status socket: /v1/status, /v1/health, /metrics, /v1/version.
// They read the StateRegistry and the daemon's AgentInfo; they own no state of their own.
#pragma once

#include <boost/json/object.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/status/router.hpp"
#include "common/clock.hpp"
#include "common/state.hpp"

namespace instanced::status {

struct ReloadOutcome {
  bool ok = true;
  Clock::wall_time at{};
  std::string error;
};

// What the daemon knows about itself, kept current by the daemon.
struct AgentInfo {
  std::string version;
  std::string instance;
  std::string phase = "starting";  // starting, running, reloading, stopping
  Clock::steady_time started{};
  Clock::wall_time started_wall{};
  std::filesystem::path config_file;
  std::vector<std::filesystem::path> dropins;
  std::string config_hash;
  Clock::wall_time config_loaded_at{};
  std::optional<ReloadOutcome> last_reload;
  std::map<std::string, std::uint64_t> restarts;  // subsystems restarted after a failure, by name
};

boost::json::object status_json(const AgentInfo& info, const StateRegistry& state, const Clock& clock,
                                std::size_t max_events = 50);
// 200 {"status":"healthy"} or 503 {"status":"unhealthy","reasons":[...]}.
Response health_response(const AgentInfo& info, const StateRegistry& state);
// Prometheus text exposition format 0.0.4.
std::string render_metrics(const AgentInfo& info, const StateRegistry& state, const Clock& clock);

void add_agent_routes(Router& router, const AgentInfo& info, const StateRegistry& state, const Clock& clock);

}  // namespace instanced::status
