// Idle detection and the start/stop schedule (`idle:`, `schedule:`, docs/workstation.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

// When the instance is idle: nothing active for `after` (docs/workstation.md#idle).
struct IdleConfig {
  bool enabled = true;
  Duration interval = std::chrono::seconds(60);  // how often activity is looked at
  Duration after = std::chrono::minutes(30);     // quiet this long: idle
  std::int64_t cpu_percent = 10;                 // busier than this (all CPUs) is activity
  std::int64_t gpu_percent = 5;                  // any GPU busier than this is activity
  std::string utmp = "/run/utmp";                // the login records (who(1) reads them)
  Duration shutdown_after = std::chrono::seconds(0);  // the platform's idle stop, for the warning; 0: none

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("after", after, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24 * 7)));
    v("cpu_percent", cpu_percent, check::range<std::int64_t>(0, 100));
    v("gpu_percent", gpu_percent, check::range<std::int64_t>(0, 100));
    v("utmp", utmp, check::absolute_path());
    v("shutdown_after", shutdown_after, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24 * 7)));
  }
};

// The instance's start/stop schedule (the control plane's; the agent shows and warns).
struct ScheduleConfig {
  std::string time_zone = "UTC";      // an IANA name: Europe/Berlin
  std::vector<std::string> stop;      // cron expressions: "MIN HOUR DAY MONTH WEEKDAY"
  std::vector<std::string> start;
  Duration warn_before = std::chrono::minutes(15);  // wall message to logged-in users; 0: none
  std::vector<std::string> wall = {"/usr/bin/wall"};

  template <class V>
  void visit(V& v) {
    v("time_zone", time_zone, check::not_empty(), check::max_length(64));
    v("stop", stop);
    v("start", start);
    v("warn_before", warn_before, check::duration_range(std::chrono::seconds(0), std::chrono::hours(24)));
    v("wall", wall);
  }
  std::optional<std::string> validate() const;
};

}  // namespace instanced
