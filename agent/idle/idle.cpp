#include "agent/idle/idle.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/child_io.hpp"
#include "common/wake.hpp"

namespace instanced::idle {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr auto kHostTimeout = std::chrono::seconds(5);
constexpr auto kWallTimeout = std::chrono::seconds(10);

Thresholds thresholds(const IdleConfig& c) {
  return Thresholds{c.after, static_cast<double>(c.cpu_percent), static_cast<double>(c.gpu_percent)};
}

std::string when(const cron::TimeZone& zone, cron::TimePoint at, Clock::wall_time now) {
  auto in = std::chrono::duration_cast<Duration>(at - now);
  return fmt::format("{} (in {})", zone.format(at), format_duration(std::chrono::duration_cast<std::chrono::minutes>(in)));
}

}  // namespace

Result<ActiveSchedule> make_schedule(const ScheduleConfig& c, std::string source) {
  auto parsed = cron::parse_schedules(c.time_zone, c.stop, c.start);
  if (!parsed) return parsed.error();
  return ActiveSchedule{c, std::move(source), std::move(*parsed)};
}

std::optional<cron::TimePoint> next_of(const std::vector<cron::Schedule>& list, const cron::TimeZone& zone,
                                       cron::TimePoint after) {
  std::optional<cron::TimePoint> best;
  for (const auto& s : list)
    if (auto n = cron::next_after(s, zone, after); n && (!best || *n < *best)) best = n;
  return best;
}

Idle::Idle(asio::any_io_executor ex, Api& api, HostActivity& host, ProcessRunner& runner, const IdleConfig& config,
           const ScheduleConfig& schedule, std::string state_dir, Signals signals)
    : ex_(std::move(ex)), api_(api), host_(host), runner_(runner), config_(config),
      configured_schedule_(schedule), state_dir_(std::move(state_dir)), signals_(std::move(signals)),
      log_(api.logging.get("idle")), tracker_(thresholds(config), api.clock.wall_now()), wake_(ex_) {
  auto s = make_schedule(configured_schedule_, "config");
  if (s) schedule_ = std::move(*s);  // checked with the config: cannot fail here
  load_schedule();
}

std::optional<cron::TimePoint> Idle::next_stop(cron::TimePoint after) const {
  return next_of(schedule_.parsed.stop, schedule_.parsed.zone, after);
}

std::filesystem::path Idle::schedule_file() const { return std::filesystem::path(state_dir_) / "schedule.json"; }

// A schedule set by the control plane outlives restarts; a bad file is set aside.
void Idle::load_schedule() {
  auto text = api_.fs.read_file(schedule_file(), 64 << 10);
  if (!text) return;  // none set
  auto bad = [&](const std::string& why) {
    log_->error("{}: {}; using the configured schedule", schedule_file().string(), why);
    std::error_code ec;
    std::filesystem::rename(schedule_file(), schedule_file().string() + ".bad", ec);
  };
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  if (ec || !v.is_object()) return bad("not a JSON object");
  auto c = schedule_from(v.as_object());
  if (!c) return bad(c.error().message);
  auto s = make_schedule(*c, "control plane");
  if (!s) return bad(s.error().message);
  schedule_ = std::move(*s);
}

// A schedule from set_schedule's arguments (or the file they were kept in), over the
// configured one's warn_before and wall.
Result<ScheduleConfig> Idle::schedule_from(const json::object& args) const {
  ScheduleConfig c = configured_schedule_;
  c.stop.clear();
  c.start.clear();
  for (const auto& [k, v] : args) {
    if (k == "time_zone") {
      if (!v.is_string()) return Error{"time_zone: not a string"};
      c.time_zone = std::string(v.as_string());
    } else if (k == "stop" || k == "start") {
      if (!v.is_array()) return Error{fmt::format("{}: not a list of cron expressions", std::string_view(k))};
      std::vector<std::string> list;
      for (std::size_t i = 0; i < v.as_array().size(); ++i) {
        const auto& e = v.as_array()[i];
        if (!e.is_string()) return Error{fmt::format("{}[{}]: not a string", std::string_view(k), i)};
        list.emplace_back(e.as_string());
      }
      (k == "stop" ? c.stop : c.start) = std::move(list);
    } else if (k != "set_at" && k != "reset") {  // set_at: written by the agent into its own file
      return Error{fmt::format("{}: unknown field (time_zone, stop, start or reset)", std::string_view(k))};
    }
  }
  if (c.stop.size() + c.start.size() > 64) return Error{"stop, start: at most 64 expressions"};
  return c;
}

Result<json::object> Idle::set_schedule(const json::object& args) {
  if (auto* r = args.if_contains("reset"); r && r->is_bool() && r->as_bool()) {
    auto s = make_schedule(configured_schedule_, "config");
    if (!s) return s.error();
    std::error_code ec;
    std::filesystem::remove(schedule_file(), ec);
    install(std::move(*s));
    return status_json();
  }
  auto parsed = schedule_from(args);
  if (!parsed) return Error{parsed.error().message, ErrorKind::invalid};
  const ScheduleConfig& c = *parsed;
  auto s = make_schedule(c, "control plane");
  if (!s) return Error{s.error().message, ErrorKind::invalid};
  json::object file{{"time_zone", c.time_zone}, {"stop", json::value_from(c.stop)}, {"start", json::value_from(c.start)},
                    {"set_at", iso8601(api_.clock.wall_now())}};
  if (auto w = api_.fs.write_file_atomic(schedule_file(), json::serialize(file), 0600); !w)
    return Error{fmt::format("could not keep the schedule: {}", w.error().message)};
  log_->info("schedule set by the control plane: stop [{}], start [{}] ({})", fmt::join(c.stop, "; "),
             fmt::join(c.start, "; "), c.time_zone);
  install(std::move(*s));
  return status_json();
}

void Idle::install(ActiveSchedule s) {
  schedule_ = std::move(s);
  warned_stop_.reset();
  wake_.pulse();
  publish();
}

void Idle::reconfigure(const IdleConfig& config, const ScheduleConfig& schedule) {
  config_ = config;
  tracker_.set_thresholds(thresholds(config_));
  bool was_config = schedule_.source == "config";
  configured_schedule_ = schedule;
  if (was_config)
    if (auto s = make_schedule(configured_schedule_, "config")) schedule_ = std::move(*s);
  publish();
  wake_.pulse();
}

asio::awaitable<void> Idle::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  for (;;) {
    // Idle detection may be off; the schedule's warnings are not.
    if (config_.enabled) co_await look();
    co_await warn_if_due();
    publish();
    // Wake for a warning that falls before the next look.
    auto wake = api_.clock.now() + config_.interval;
    const auto now = api_.clock.wall_now();
    auto consider = [&](std::optional<Clock::wall_time> at) {
      if (at && *at > now) wake = std::min(wake, api_.clock.now() + (*at - now));
    };
    if (configured_schedule_.warn_before.count() > 0) {
      if (auto n = next_stop(now); n && warned_stop_ != n)
        consider(*n - configured_schedule_.warn_before);
    }
    co_await wake_.sleep_until(api_.clock, wake);
  }
}

asio::awaitable<void> Idle::look() {
  Sample s;
  s.at = api_.clock.wall_now();
  HostActivity& host = host_;
  const std::string utmp = config_.utmp;
  // Named, not temporaries: GCC 12 destroys temporaries of a co_await expression wrongly.
  const std::string reading_utmp = "reading " + utmp, reading_stat = "reading /proc/stat";
  auto read_sessions = [&host, utmp] { return host.sessions(utmp); };
  auto read_cpu = [&host] { return host.cpu_times(); };
  auto sessions = co_await api_.pool.run(reading_utmp, kHostTimeout, read_sessions);
  auto cpu = co_await api_.pool.run(reading_stat, kHostTimeout, read_cpu);
  std::string error;
  if (sessions)
    s.sessions = std::move(*sessions);
  else
    error = sessions.error().message;
  if (cpu) {
    if (cpu_) s.cpu_percent = cpu_percent(*cpu_, *cpu);
    cpu_ = *cpu;
  } else if (error.empty()) {
    error = cpu.error().message;
  }
  if (error != host_error_ && !error.empty()) log_->warn("{}", error);
  host_error_ = error;
  if (signals_.jobs) s.jobs = signals_.jobs();
  if (signals_.setup_running) s.setup_running = signals_.setup_running();
  if (signals_.gpu_percent) s.gpu_percent = signals_.gpu_percent();
  if (signals_.jupyter) s.jupyter = signals_.jupyter();
  const bool was_idle = idle_;
  auto before = tracker_.idle_since();
  tracker_.observe(s);
  looked_ = true;
  const bool now_idle = tracker_.idle(s.at);
  idle_ = now_idle;
  auto& m = api_.state.metrics();
  m.set_gauge("instanced_idle", "1 when the instance is idle (quiet for idle.after).", {}, now_idle ? 1 : 0);
  if (s.cpu_percent)
    m.set_gauge("instanced_cpu_utilization_ratio", "CPU utilisation over the last idle look (0-1).", {}, *s.cpu_percent / 100.0);
  if (now_idle != was_idle) {
    auto since = tracker_.idle_since();
    std::string msg = now_idle ? fmt::format("idle since {}", iso8601(*since))
                               : fmt::format("active again: {}", fmt::join(tracker_.activity(), "; "));
    log_->info("{}", msg);
    json::object data{{"idle", now_idle}};
    if (since) data["idle_since"] = iso8601(*since);
    if (!now_idle) data["activity"] = json::value_from(tracker_.activity());
    api_.state.emit("idle", now_idle ? "idle" : "active", msg, std::move(data));
  }
  if (before && !tracker_.idle_since()) warned_idle_.reset();
}

asio::awaitable<void> Idle::warn_if_due() {
  const auto warn = configured_schedule_.warn_before;
  if (warn.count() <= 0) co_return;
  const auto now = api_.clock.wall_now();
  const cron::TimeZone& zone = schedule_.parsed.zone;
  // The stop due within warn_before (looked for from a little back: a warning due while
  // we slept is late, not lost).
  if (auto n = next_stop(now - std::chrono::seconds(1)); n && *n - warn <= now && *n > now && warned_stop_ != n) {
    warned_stop_ = n;
    const std::string message = fmt::format(
        "This instance will be stopped by its schedule at {}. Save your work; "
        "files outside the workspace share are kept, running programs end.",
        when(zone, *n, now));
    const std::string kind = "schedule";
    co_await wall(kind, *n, message);
  }
  if (config_.enabled && config_.shutdown_after.count() > 0) {
    if (auto since = tracker_.idle_since(); since && warned_idle_ != since) {
      auto stop_at = *since + config_.shutdown_after;
      if (stop_at - warn <= now && stop_at > now) {
        warned_idle_ = since;
        const std::string message = fmt::format(
            "This instance has been idle since {} and will be stopped at about {}. "
            "Any activity (a login, a Jupyter kernel, a job) keeps it running.",
            zone.format(*since), when(zone, stop_at, now));
        const std::string kind = "idle";
        co_await wall(kind, stop_at, message);
      }
    }
  }
}

asio::awaitable<void> Idle::wall(std::string kind, Clock::wall_time at, std::string message) {
  log_->warn("warning logged-in users: {}", message);
  api_.state.emit("idle", "stop_warning", message, {{"kind", kind}, {"stop_at", iso8601(at)}});
  SpawnSpec spec;
  spec.argv = configured_schedule_.wall;
  spec.argv.push_back("instanced: " + message);
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C.UTF-8"};
  auto r = co_await run_command(runner_, api_.clock, std::move(spec), kWallTimeout);
  if (!r)
    log_->error("the stop warning was not sent: {}", r.error().message);
  else if (!r->status.success())
    log_->error("the stop warning was not sent: {} {}: {}", command_label(configured_schedule_.wall),
                r->status.describe(), r->last_line());
}

std::optional<std::string> Idle::veto(std::string_view action) const {
  if (action != "idle_shutdown") return std::nullopt;
  if (!config_.enabled) return std::string("idle detection is off (idle.enabled: false)");
  if (!looked_) return std::string("not idle: activity has not been looked at yet");
  auto reasons = tracker_.not_idle_reasons(api_.clock.wall_now());
  if (reasons.empty()) return std::nullopt;
  return fmt::format("not idle: {}", fmt::join(reasons, "; "));
}

json::object Idle::status_json() const {
  const auto now = api_.clock.wall_now();
  json::object o{{"enabled", config_.enabled}, {"after_s", std::chrono::duration_cast<std::chrono::seconds>(config_.after).count()}};
  o["idle"] = looked_ && tracker_.idle(now);
  if (auto since = tracker_.idle_since(); since && looked_) o["idle_since"] = iso8601(*since);
  o["activity"] = json::value_from(tracker_.activity());
  json::object sched{{"source", schedule_.source},
                     {"time_zone", schedule_.config.time_zone},
                     {"stop", json::value_from(schedule_.config.stop)},
                     {"start", json::value_from(schedule_.config.start)},
                     {"warn_before_s", std::chrono::duration_cast<std::chrono::seconds>(configured_schedule_.warn_before).count()}};
  const cron::TimeZone& zone = schedule_.parsed.zone;
  if (auto n = next_stop(now)) {
    sched["next_stop"] = iso8601(*n);
    sched["next_stop_local"] = zone.format(*n);
  }
  if (auto n = next_of(schedule_.parsed.start, zone, now)) {
    sched["next_start"] = iso8601(*n);
    sched["next_start_local"] = zone.format(*n);
  }
  o["schedule"] = std::move(sched);
  if (!host_error_.empty()) o["error"] = host_error_;
  return o;
}

void Idle::publish() {
  const auto now = api_.clock.wall_now();
  std::string summary;
  Health h = Health::ok;
  if (!config_.enabled) {
    summary = "idle detection off";
  } else if (!looked_) {
    h = Health::starting;
    summary = "looking at activity";
  } else if (auto since = tracker_.idle_since()) {
    auto quiet = std::chrono::duration_cast<std::chrono::minutes>(now - *since);
    summary = tracker_.idle(now) ? fmt::format("idle since {} ({})", iso8601(*since), format_duration(quiet))
                                 : fmt::format("quiet since {} ({}; idle after {})", iso8601(*since),
                                               format_duration(quiet), format_duration(config_.after));
  } else {
    summary = fmt::format("active: {}", fmt::join(tracker_.activity(), "; "));
  }
  if (auto n = next_stop(now)) summary += "; next scheduled stop " + when(schedule_.parsed.zone, *n, now);
  api_.state.publish("idle", h, summary, status_json());
  std::string hb;
  if (config_.enabled && looked_) {
    auto since = tracker_.idle_since();
    hb = fmt::format(R"({{"since":{},"idle":{}}})", since ? "\"" + iso8601(*since) + "\"" : "null",
                     tracker_.idle(now) ? "true" : "false");
  }
  api_.state.set_heartbeat_summary("idle", hb);
}

void Idle::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/idle", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
}

}  // namespace instanced::idle
