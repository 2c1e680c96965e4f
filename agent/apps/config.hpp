// The users' applications (`applications:`, docs/workstation.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

// One of the users' applications (Jupyter, RStudio Server, VS Code's server, nginx).
struct AppConfig {
  std::string name;
  std::string unit;       // its systemd unit: restarted through it when `restart` is on
  std::string process;    // a process of this name must run (its /proc comm, 15 characters)
  std::string url;        // http://127.0.0.1:PORT/PATH probed with GET
  std::int64_t expect_status = 200;
  std::string websocket;  // ws://127.0.0.1:PORT/PATH: a WebSocket handshake must succeed too
  bool jupyter = false;   // `url`'s server is Jupyter: /api/kernels and /api/terminals give activity
  std::string token_file; // Jupyter's token (a file, mode 0600)
  bool restart = false;   // restart the unit when down (rate-limited)
  bool operator==(const AppConfig&) const = default;

  template <class V>
  void visit(V& v) {
    v("name", name, check::identifier());
    v("unit", unit, check::max_length(256));
    v("process", process, check::max_length(15));
    v("url", url, check::max_length(2048));
    v("expect_status", expect_status, check::range<std::int64_t>(100, 599));
    v("websocket", websocket, check::max_length(2048));
    v("jupyter", jupyter);
    v("token_file", token_file, check::absolute_path_or_empty());
    v("restart", restart);
  }
  std::optional<std::string> validate() const;
};

struct AppsConfig {
  Duration interval = std::chrono::seconds(15);
  Duration timeout = std::chrono::seconds(5);      // one probe
  Duration slow = std::chrono::seconds(2);         // an answer slower than this is degraded
  std::int64_t down_after = 2;                     // failed probes in a row before down (and a restart)
  std::int64_t max_restarts = 3;                   // per app within restart_window
  Duration restart_window = std::chrono::minutes(30);
  Duration start_grace = std::chrono::minutes(2);  // after a restart: not restarted again before it answers or this passes
  std::vector<AppConfig> apps;

  template <class V>
  void visit(V& v) {
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("timeout", timeout, check::duration_range(std::chrono::milliseconds(50), std::chrono::minutes(5)));
    v("slow", slow, check::duration_range(std::chrono::milliseconds(1), std::chrono::minutes(5)));
    v("down_after", down_after, check::range<std::int64_t>(1, 100));
    v("max_restarts", max_restarts, check::range<std::int64_t>(0, 100));
    v("restart_window", restart_window, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24)));
    v("start_grace", start_grace, check::duration_range(std::chrono::seconds(0), std::chrono::hours(1)));
    v("apps", apps);
  }
  std::optional<std::string> validate() const;
};

}  // namespace instanced
