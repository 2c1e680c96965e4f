// What counts as activity on a workstation, and the idle tracker that turns samples of it
// into `idle_since` (docs/workstation.md#idle). Free of I/O: the subsystem (idle.hpp)
// gathers the samples, tests feed them with the times they choose.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/apps/probe.hpp"
#include "common/clock.hpp"
#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced::idle {

// One look at everything that keeps an instance busy.
struct Sample {
  Clock::wall_time at{};
  std::vector<std::string> sessions;         // logins (utmp): "alice pts/0 from 10.0.0.5"
  std::size_t jobs = 0;                       // queued or running
  bool setup_running = false;                 // a setup script runs
  std::optional<double> cpu_percent;          // all CPUs since the last sample
  std::optional<double> gpu_percent;          // the busiest GPU
  std::optional<apps::JupyterActivity> jupyter;  // all Jupyter servers together
};

struct Thresholds {
  Duration after{};        // quiet this long: idle
  double cpu_percent = 10;
  double gpu_percent = 5;
};

class IdleTracker {
 public:
  // `start`: nothing is known before it (the agent started), so quiet counts from there.
  IdleTracker(Thresholds t, Clock::wall_time start) : t_(t), last_active_(start) {}
  void set_thresholds(Thresholds t) { t_ = t; }

  void observe(const Sample& s);
  // Why the instance is not quiet, as of the last sample; empty when it is.
  const std::vector<std::string>& activity() const { return reasons_; }
  // When the last activity ended, while quiet; nothing while something is active.
  std::optional<Clock::wall_time> idle_since() const;
  // Quiet for at least `after` by `now`.
  bool idle(Clock::wall_time now) const;
  // Why it is not idle at `now`: the activity, or how long it has been quiet of `after`.
  std::vector<std::string> not_idle_reasons(Clock::wall_time now) const;

 private:
  Thresholds t_;
  Clock::wall_time last_active_;
  std::vector<std::string> reasons_;
};

// The host's own signals, behind an interface: the product reads utmp and /proc/stat,
// tests hand in a utmp file of their own.
struct CpuTimes {
  std::uint64_t busy = 0;
  std::uint64_t total = 0;
};
// The CPU utilisation between two readings, in percent.
std::optional<double> cpu_percent(const CpuTimes& before, const CpuTimes& after);

class HostActivity {
 public:
  virtual ~HostActivity() = default;
  // Open login sessions: USER_PROCESS records of the utmp file whose process still
  // exists. May block.
  virtual Result<std::vector<std::string>> sessions(const std::string& utmp) = 0;
  virtual Result<CpuTimes> cpu_times() = 0;
};

class RealHostActivity final : public HostActivity {
 public:
  Result<std::vector<std::string>> sessions(const std::string& utmp) override;
  Result<CpuTimes> cpu_times() override;
};

}  // namespace instanced::idle
