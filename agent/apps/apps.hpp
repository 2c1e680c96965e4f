// Application health (docs/workstation.md#applications): the users' tools (Jupyter,
// RStudio Server, VS Code's server, nginx) probed every applications.interval: an HTTP
// GET with the expected status, an optional WebSocket handshake (Jupyter's kernel
// channels need WebSockets), an optional process that must run. Each app is up, degraded
// (slow, 5xx) or down; down for down_after probes in a row, an app with `restart` is
// restarted through systemd, at most max_restarts times per restart_window. A Jupyter
// server's /api/kernels and /api/terminals tell the idle detector when users last did
// something. Serves /v1/apps; events app_state, app_restarted, app_restart_failed.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/apps/config.hpp"
#include "agent/apps/probe.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/services.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::apps {

class Apps final : public Subsystem {
 public:
  Apps(boost::asio::any_io_executor ex, Api& api, ServiceManager& services, const AppsConfig& config);

  std::string name() const override { return "apps"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `applications` section.
  void reconfigure(const AppsConfig& config);

  // Users' activity on the Jupyter servers (apps with `jupyter`), as last read; `known`
  // is false until one has answered.
  struct Activity {
    bool known = false;
    JupyterActivity jupyter;
  };
  Activity activity() const;

  boost::json::object status_json() const;
  void add_routes(status::Router& router);

 private:
  struct App {
    AppConfig config;
    AppState state = AppState::unknown;
    std::string reason;
    Clock::wall_time since{};
    std::optional<Duration> latency;
    int failures = 0;  // probes in a row that were not up or degraded
    std::deque<Clock::steady_time> restarts;  // within restart_window
    std::uint64_t restarts_total = 0;
    bool limited_reported = false;
    std::optional<Clock::steady_time> restarted_at;  // the last restart, until the app answers again
    std::optional<JupyterActivity> jupyter;
    std::string jupyter_error;
  };

  boost::asio::awaitable<void> probe(std::shared_ptr<App> app);
  boost::asio::awaitable<Verdict> check(App& app);
  boost::asio::awaitable<void> read_jupyter(App& app, const Url& base, const Secret& token);
  boost::asio::awaitable<void> maybe_restart(App& app);
  bool starting(const App& app) const;
  void publish();

  boost::asio::any_io_executor ex_;
  Api& api_;
  ServiceManager& services_;
  AppsConfig config_;
  Logger log_;
  // Shared: a probe keeps its app alive across a reload that replaces or removes it (and
  // then drops what it found).
  std::map<std::string, std::shared_ptr<App>> apps_;
  bool probed_ = false;
  Wake wake_;  // the next round; pulsed by a reload
};

}  // namespace instanced::apps
