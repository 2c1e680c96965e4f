#include "agent/apps/apps.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>

#include "common/message_ids.hpp"
#include "common/wake.hpp"

namespace instanced::apps {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr auto kProcTimeout = std::chrono::seconds(5);

// Whether a process whose /proc/PID/comm is `name` runs (what pgrep -x matches).
bool process_running(const std::string& name) {
  DIR* d = opendir("/proc");
  if (!d) return false;
  bool found = false;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::ifstream in(fmt::format("/proc/{}/comm", e->d_name));
    std::string comm;
    if (in && std::getline(in, comm) && comm == name) {
      found = true;
      break;
    }
  }
  closedir(d);
  return found;
}

// The Jupyter server's base: the probe URL without its /api/... path.
Url jupyter_base(Url u) {
  auto api = u.target.find("/api/");
  u.target = api == std::string::npos ? "" : u.target.substr(0, api);
  return u;
}

}  // namespace

Apps::Apps(asio::any_io_executor ex, Api& api, ServiceManager& services, const AppsConfig& config)
    : ex_(ex), api_(api), services_(services), config_(config), log_(api.logging.get("apps")),
      wake_(ex) {
  for (const auto& a : config_.apps) {
    auto app = std::make_shared<App>();
    app->config = a;
    apps_[a.name] = std::move(app);
  }
}

void Apps::reconfigure(const AppsConfig& config) {
  config_ = config;
  std::map<std::string, std::shared_ptr<App>> next;
  for (const auto& a : config_.apps) {
    auto it = apps_.find(a.name);
    if (it != apps_.end() && it->second->config == a) {
      next[a.name] = it->second;  // unchanged: keeps its state
    } else {
      auto app = std::make_shared<App>();
      app->config = a;
      next[a.name] = std::move(app);
    }
  }
  for (const auto& [name, app] : apps_)
    if (!next.count(name)) api_.state.metrics().forget("instanced_app_", "app", name);
  apps_ = std::move(next);
  publish();
  wake_.pulse();
}

asio::awaitable<void> Apps::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  for (;;) {
    // A copy of the names: reconfigure() may replace the map while a probe waits.
    std::vector<std::shared_ptr<App>> round;
    round.reserve(apps_.size());
    for (const auto& [name, app] : apps_) round.push_back(app);
    for (const auto& app : round) co_await probe(app);
    probed_ = true;
    publish();
    // With nothing to probe the agent does not wake at all, until a reload adds apps.
    if (apps_.empty())
      co_await wake_.wait();
    else
      co_await wake_.sleep_for(api_.clock, config_.interval);
  }
}

asio::awaitable<Verdict> Apps::check(App& app) {
  const AppConfig& c = app.config;
  if (!c.process.empty()) {
    // Named, not temporaries: GCC 12 destroys temporaries of a co_await expression wrongly.
    const std::string name = c.process;
    const std::string what = "looking for process " + name;
    auto look = [name] { return process_running(name); };
    auto running = co_await api_.pool.run(what, kProcTimeout, look);
    if (!running) co_return Verdict{AppState::down, running.error().message};
    if (!*running) co_return Verdict{AppState::down, fmt::format("no process named '{}' runs", name)};
  }
  Secret token;
  if (!c.token_file.empty()) {
    auto t = read_secret_file(c.token_file, fmt::format("applications.apps[{}].token_file", c.name));
    if (!t) co_return Verdict{AppState::down, t.error().message};
    token = std::move(*t);
  }
  Verdict v{AppState::up, {}};
  if (!c.url.empty()) {
    auto url = parse_url(c.url);  // checked with the config
    auto answer = co_await http_get(*url, token, config_.timeout, 64 << 10);
    if (answer) app.latency = answer->elapsed;
    v = judge(answer, static_cast<unsigned>(c.expect_status), config_.slow);
    if (v.state == AppState::down) co_return v;
    if (c.jupyter) {
      const Url base = jupyter_base(*url);
      co_await read_jupyter(app, base, token);
    }
  }
  if (!c.websocket.empty()) {
    const auto ws_url = parse_url(c.websocket);  // checked with the config
    auto ws = co_await websocket_handshake(*ws_url, token, config_.timeout);
    if (!ws) co_return Verdict{AppState::down, ws.error().message};
    if (*ws > config_.slow && v.state == AppState::up)
      v = {AppState::degraded, fmt::format("slow: the WebSocket handshake took {}", format_duration(*ws))};
  }
  co_return v;
}

asio::awaitable<void> Apps::read_jupyter(App& app, const Url& base, const Secret& token) {
  JupyterActivity a;
  std::string error;
  for (const char* path : {"/api/kernels", "/api/terminals"}) {
    Url u = base;
    u.target += path;
    auto answer = co_await http_get(u, token, config_.timeout);
    if (!answer) {
      error = answer.error().message;
      break;
    }
    // Terminals may be disabled on the server (404): then there are none.
    if (answer->status == 404 && std::string_view(path) == "/api/terminals") continue;
    if (answer->status != 200) {
      error = fmt::format("GET {}: answered {}", u.target, answer->status);
      break;
    }
    boost::system::error_code ec;
    auto v = json::parse(answer->body, ec);
    if (ec) {
      error = fmt::format("GET {}: not JSON ({})", u.target, ec.message());
      break;
    }
    auto r = std::string_view(path) == "/api/kernels" ? add_kernels(a, v) : add_terminals(a, v);
    if (!r) {
      error = r.error().message;
      break;
    }
  }
  if (error.empty()) {
    app.jupyter = a;
    app.jupyter_error.clear();
  } else {
    if (error != app.jupyter_error) log_->warn("app {}: reading Jupyter's activity: {}", app.config.name, error);
    app.jupyter_error = error;
    app.jupyter.reset();
  }
}

asio::awaitable<void> Apps::probe(std::shared_ptr<App> held) {
  App& app = *held;
  const std::string name = app.config.name;
  Verdict v = co_await check(app);
  auto it = apps_.find(name);
  if (it == apps_.end() || it->second != held) co_return;  // replaced or removed by a reload meanwhile
  // A server that does not answer says nothing about its users: what it said last (a busy
  // kernel) must not keep the instance from being idle for ever.
  if (v.state == AppState::down) app.jupyter.reset();
  if (v.state == AppState::down) {
    ++app.failures;
    // Down only after down_after failed probes in a row: one lost probe is not an outage.
    if (app.failures < config_.down_after && app.state != AppState::unknown && app.state != AppState::down) {
      v = {app.state, app.reason};
    }
  } else {
    app.failures = 0;
    app.limited_reported = false;
    app.restarted_at.reset();  // it came up: the next outage may restart it
  }
  if (v.state != app.state) {
    auto from = app.state;
    app.state = v.state;
    app.since = api_.clock.wall_now();
    auto level = v.state == AppState::up ? spdlog::level::info : spdlog::level::warn;
    log_->log(level, "app {}: {}{}", name, to_string(v.state), v.reason.empty() ? "" : " (" + v.reason + ")");
    api_.state.emit("apps", "app_state",
                    fmt::format("{} is {}{}", name, to_string(v.state), v.reason.empty() ? "" : ": " + v.reason),
                    {{"app", name}, {"state", to_string(v.state)}, {"from", to_string(from)}, {"reason", v.reason}});
  }
  app.reason = v.reason;
  auto& m = api_.state.metrics();
  m.set_gauge("instanced_app_up", "1 when the app is up or degraded.", {{"app", name}},
              app.state == AppState::up || app.state == AppState::degraded ? 1 : 0);
  if (app.latency) {
    const double seconds = std::chrono::duration<double>(*app.latency).count();
    m.set_gauge("instanced_app_probe_seconds", "How long the app's last HTTP probe took.", {{"app", name}}, seconds);
    m.observe("instanced_app_probe_duration_seconds", "How long the app's HTTP probes took.", {{"app", name}}, seconds,
              kLatencyBuckets);
  }
  if (app.state == AppState::down && app.failures >= config_.down_after && !starting(app)) co_await maybe_restart(app);
}

// Restarted and not answering yet, within start_grace: a slow start is not a new outage.
bool Apps::starting(const App& app) const {
  return app.restarted_at && api_.clock.now() - *app.restarted_at < config_.start_grace;
}

asio::awaitable<void> Apps::maybe_restart(App& app) {
  const AppConfig& c = app.config;
  if (!c.restart) co_return;
  const auto now = api_.clock.now();
  while (!app.restarts.empty() && now - app.restarts.front() >= config_.restart_window) app.restarts.pop_front();
  if (static_cast<std::int64_t>(app.restarts.size()) >= config_.max_restarts) {
    if (!app.limited_reported) {
      app.limited_reported = true;
      std::string msg = fmt::format("{} is down and was restarted {} times within {}: not restarting it again until "
                                    "the window has passed",
                                    c.name, app.restarts.size(), format_duration(config_.restart_window));
      log_->error("{}", msg);
      api_.state.emit("apps", "app_restart_limited", msg, {{"app", c.name}, {"unit", c.unit}});
    }
    co_return;
  }
  app.restarts.push_back(now);
  app.restarted_at = now;
  ++app.restarts_total;
  app.failures = 0;  // the next restart needs down_after new failures
  const std::string name = c.name, unit = c.unit, reason = app.reason;
  {
    LogFields fields{{"MESSAGE_ID", msgid::kAppRestarted}, {"INSTANCED_APP", name}, {"INSTANCED_UNIT", unit}};
    log_->warn("app {}: down ({}); restarting {}", name, reason, unit);
  }
  auto r = co_await services_.restart(unit);
  api_.state.metrics().add_counter("instanced_app_restarts_total", "Restarts of apps by the agent, by result.",
                                   {{"app", name}, {"result", r ? "ok" : "failed"}});
  if (r) {
    api_.state.emit("apps", "app_restarted", fmt::format("{} was down ({}): restarted {}", name, reason, unit),
                    {{"app", name}, {"unit", unit}, {"reason", reason}});
  } else {
    log_->error("app {}: restarting {} failed: {}", name, unit, r.error().message);
    api_.state.emit("apps", "app_restart_failed", fmt::format("restarting {} failed: {}", unit, r.error().message),
                    {{"app", name}, {"unit", unit}, {"error", r.error().message}});
  }
}

Apps::Activity Apps::activity() const {
  Activity out;
  for (const auto& [name, held] : apps_) {
    const App& app = *held;
    if (!app.jupyter) continue;
    out.known = true;
    const auto& j = *app.jupyter;
    if (j.last && (!out.jupyter.last || *j.last > *out.jupyter.last)) out.jupyter.last = j.last;
    out.jupyter.kernels += j.kernels;
    out.jupyter.busy += j.busy;
    out.jupyter.connections += j.connections;
    out.jupyter.terminals += j.terminals;
  }
  return out;
}

json::object Apps::status_json() const {
  json::array list;
  for (const auto& [name, held] : apps_) {
    const App& app = *held;
    json::object o{{"name", name}, {"state", to_string(app.state)}};
    if (!app.reason.empty()) o["reason"] = app.reason;
    if (app.since != Clock::wall_time{}) o["since"] = iso8601(app.since);
    if (!app.config.unit.empty()) o["unit"] = app.config.unit;
    if (!app.config.url.empty()) o["url"] = app.config.url;
    if (app.latency) o["latency_ms"] = app.latency->count();
    o["restart"] = app.config.restart;
    o["restarts"] = app.restarts_total;
    if (app.jupyter) {
      json::object j{{"kernels", app.jupyter->kernels},
                     {"busy_kernels", app.jupyter->busy},
                     {"connections", app.jupyter->connections},
                     {"terminals", app.jupyter->terminals}};
      if (app.jupyter->last) j["last_activity"] = iso8601(*app.jupyter->last);
      o["jupyter"] = std::move(j);
    } else if (!app.jupyter_error.empty()) {
      o["jupyter_error"] = app.jupyter_error;
    }
    list.push_back(std::move(o));
  }
  return {{"apps", std::move(list)}};
}

void Apps::publish() {
  std::size_t up = 0, degraded = 0, down = 0;
  std::vector<std::string> bad;
  for (const auto& [name, held] : apps_) {
    const App& app = *held;
    if (app.state == AppState::up) ++up;
    if (app.state == AppState::degraded) ++degraded, bad.push_back(name + " degraded: " + app.reason);
    if (app.state == AppState::down) ++down, bad.push_back(name + " down: " + app.reason);
  }
  Health h = Health::ok;
  std::string summary;
  if (apps_.empty()) {
    summary = "no applications configured";
  } else if (!probed_) {
    h = Health::starting;
    summary = fmt::format("probing {} applications", apps_.size());
  } else if (bad.empty()) {
    summary = fmt::format("{} up", up);
  } else {
    h = Health::degraded;
    summary = fmt::format("{} up; {}", up, fmt::join(bad, "; "));
  }
  api_.state.publish("apps", h, summary, status_json());
  if (apps_.empty())
    api_.state.set_heartbeat_summary("apps", "");
  else
    api_.state.set_heartbeat_summary("apps", fmt::format(R"({{"up":{},"degraded":{},"down":{}}})", up, degraded, down));
}

void Apps::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/apps", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
}

}  // namespace instanced::apps
