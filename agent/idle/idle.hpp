// Idle detection and the instance's schedule (docs/workstation.md#idle and #schedules).
// Every idle.interval it looks at logins (utmp), jobs, setup scripts, CPU and GPU
// utilisation and the Jupyter servers' activity; `idle_since` goes into the heartbeat.
// The control plane's idle_shutdown is refused (veto) unless the instance has been quiet
// for idle.after. The schedule (config, or set_schedule from the control plane, kept in
// state_dir) gives the next stop; logged-in users get a wall(1) message warn_before a
// scheduled stop, and before the platform's idle stop when idle.shutdown_after is known.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "agent/idle/activity.hpp"
#include "agent/idle/config.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/cron.hpp"
#include "common/process.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::idle {

// The other subsystems' share of activity, read at each look.
struct Signals {
  std::function<std::size_t()> jobs;                                 // queued + running
  std::function<bool()> setup_running;
  std::function<std::optional<double>()> gpu_percent;                // the busiest GPU
  std::function<std::optional<apps::JupyterActivity>()> jupyter;     // nothing: no Jupyter known
};

// A schedule in force, parsed.
struct ActiveSchedule {
  ScheduleConfig config;
  std::string source = "config";  // or "control plane"
  cron::ZonedSchedules parsed;    // config's time zone and expressions (UTC and none by default)
};
// Parses a schedule; the error names the field ("stop[1]: field 2 (hour): …"). warn_before
// and wall are the configuration's, checked when it was loaded.
Result<ActiveSchedule> make_schedule(const ScheduleConfig& c, std::string source);
// The earliest time after `after` of any of `list`.
std::optional<cron::TimePoint> next_of(const std::vector<cron::Schedule>& list, const cron::TimeZone& zone,
                                       cron::TimePoint after);

class Idle final : public Subsystem {
 public:
  Idle(boost::asio::any_io_executor ex, Api& api, HostActivity& host, ProcessRunner& runner, const IdleConfig& config,
       const ScheduleConfig& schedule, std::string state_dir,
       Signals signals);

  std::string name() const override { return "idle"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `idle` and `schedule` section.
  void reconfigure(const IdleConfig& config, const ScheduleConfig& schedule);

  // For idle_shutdown: why not (the activity, or not quiet for long enough), or nothing.
  std::optional<std::string> veto(std::string_view action) const;
  // set_schedule {time_zone, stop, start}: replaces the configured schedule until the next
  // set_schedule ({"reset": true} goes back to the config's). Kept in state_dir.
  Result<boost::json::object> set_schedule(const boost::json::object& args);

  std::optional<Clock::wall_time> idle_since() const { return tracker_.idle_since(); }
  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  boost::asio::awaitable<void> look();
  boost::asio::awaitable<void> warn_if_due();
  boost::asio::awaitable<void> wall(std::string kind, Clock::wall_time at, std::string message);
  void load_schedule();
  // Puts `s` in force: a new stop gets its own warning, and the loop looks again.
  void install(ActiveSchedule s);
  Result<ScheduleConfig> schedule_from(const boost::json::object& args) const;
  void publish();
  std::filesystem::path schedule_file() const;
  std::optional<cron::TimePoint> next_stop(cron::TimePoint after) const;

  boost::asio::any_io_executor ex_;
  Api& api_;
  HostActivity& host_;
  ProcessRunner& runner_;
  IdleConfig config_;
  ScheduleConfig configured_schedule_;
  std::string state_dir_;
  Signals signals_;
  Logger log_;
  IdleTracker tracker_;
  ActiveSchedule schedule_;
  std::optional<CpuTimes> cpu_;
  bool looked_ = false;
  bool idle_ = false;  // as of the last look
  Wake wake_;  // the next look; pulsed by a reload or set_schedule
  std::string host_error_;
  std::optional<cron::TimePoint> warned_stop_;        // the scheduled stop already warned of
  std::optional<Clock::wall_time> warned_idle_;       // the idle period (its start) already warned of
};

}  // namespace instanced::idle
