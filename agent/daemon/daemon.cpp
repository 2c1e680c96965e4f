#include "agent/daemon/daemon.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <time.h>
#include <unistd.h>

#include "agent/daemon/run_record.hpp"
#include "agent/daemon/watchdog.hpp"
#include "common/coro.hpp"
#include "common/message_ids.hpp"

namespace instanced {

namespace asio = boost::asio;
using namespace std::chrono_literals;

namespace {
constexpr auto kReloadTimeout = 10s;  // reading a few small files; longer means a hung file system
constexpr auto kGraceAfterDeadline = 200ms;  // per subsystem, once shutdown.timeout is spent
constexpr Duration kFirstRestartPause = 1s;  // before a failed subsystem runs again; doubles
constexpr Duration kMaxRestartPause = 5min;
constexpr Duration kRestartResetAfter = 10min;  // a run this long starts the pauses over
}  // namespace

std::string Daemon::read_boot_id() {
  auto read = api_.fs.read_file("/proc/sys/kernel/random/boot_id", 128);
  std::string id = read ? *read : std::string();
  while (!id.empty() && (id.back() == '\n' || id.back() == ' ')) id.pop_back();
  return id;
}

std::string instance_name(const Config& config) {
  if (!config.instance.name.empty()) return config.instance.name;
  char buf[256] = {};
  if (gethostname(buf, sizeof buf - 1) != 0) return "unknown";
  return buf;
}

Daemon::Daemon(asio::io_context& ioc, Api& api, const Options& options, LoadedConfig config,
               status::AgentInfo& info)
    : ioc_(ioc), api_(api), options_(options), config_(std::move(config)), info_(info),
      log_(api.logging.get("daemon")) {}

void Daemon::add(Subsystem& subsystem, Reconfigure reconfigure) {
  auto t = std::make_unique<Task>();
  t->subsystem = &subsystem;
  t->reconfigure = std::move(reconfigure);
  t->ended = std::make_unique<Wake>(ioc_.get_executor());
  tasks_.push_back(std::move(t));
}

void Daemon::set_status(const std::string& line) { api_.notifier.notify("STATUS=" + line); }

void Daemon::publish_config_state() {
  boost::json::object d;
  d["file"] = config_.file.string();
  d["hash"] = config_.hash;
  if (info_.last_reload && !info_.last_reload->ok)
    api_.state.publish("config", Health::degraded,
                       "last reload failed, running the previous configuration: " + info_.last_reload->error,
                       std::move(d));
  else
    api_.state.publish("config", Health::ok, "loaded " + config_.hash.substr(0, 12), std::move(d));
}

int Daemon::run() {
  asio::co_spawn(ioc_, main_flow(), [this](std::exception_ptr e) {
    if (!e) return;
    log_->critical("daemon failed: {}", describe(e));
    exit_code_ = 1;
    ioc_.stop();
  });
  ioc_.run();
  return exit_code_;
}

void Daemon::start(Task& task) {
  auto* t = &task;
  asio::co_spawn(ioc_, supervise(*t), asio::bind_cancellation_slot(t->signal.slot(), [t](std::exception_ptr) {
                   t->done = true;
                   t->ended->pulse();
                 }));
}

// A subsystem that fails (throws) is started again after a pause that doubles from 1 s
// to 5 min (back to 1 s once a run has lasted 10 min): a node agent does not give up on
// a part of itself. Its failure and each restart are logged, published, counted and sent.
asio::awaitable<void> Daemon::supervise(Task& t) {
  const std::string name = t.subsystem->name();
  Duration pause = kFirstRestartPause;
  for (;;) {
    const auto started = api_.clock.now();
    auto failure = co_await run_once(*t.subsystem);
    auto cs = co_await asio::this_coro::cancellation_state;
    if (!failure || cs.cancelled() != asio::cancellation_type::none) co_return;
    if (api_.clock.now() - started >= kRestartResetAfter) pause = kFirstRestartPause;
    const std::uint64_t n = ++info_.restarts[name];
    log_->error("subsystem {} failed: {}; restarting it in {} (restart {})", name, *failure, format_duration(pause), n);
    api_.state.publish(name, Health::failed,
                       fmt::format("failed: {}; restarting in {} (restart {})", *failure, format_duration(pause), n));
    api_.state.metrics().add_counter("instanced_subsystem_restarts_total", "Subsystems started again after a failure.",
                                     {{"subsystem", name}});
    api_.state.emit(name, "subsystem_restarting", fmt::format("{} failed: {}", name, *failure),
                    {{"error", *failure}, {"restart", n}, {"in_seconds", std::chrono::duration<double>(pause).count()}});
    co_await api_.clock.sleep_for(pause);  // throws when the agent stops meanwhile
    pause = std::min<Duration>(pause * 2, kMaxRestartPause);
  }
}

// One run of a subsystem: its failure, or nothing when it returned or was cancelled.
asio::awaitable<std::optional<std::string>> Daemon::run_once(Subsystem& subsystem) {
  try {
    co_await subsystem.run();
  } catch (const boost::system::system_error& ex) {
    if (is_cancelled(ex)) co_return std::nullopt;  // a normal stop
    co_return std::string(ex.what());
  } catch (const std::exception& ex) {
    co_return std::string(ex.what());
  }
  co_return std::nullopt;
}

asio::awaitable<void> Daemon::main_flow() {
  asio::signal_set signals(ioc_, SIGTERM, SIGINT, SIGHUP);
  set_status("starting");
  if (auto r = api_.fs.create_directories(config_.config.state_dir, 0755); !r) {
    log_->critical("state_dir: {}", r.error().message);
    exit_code_ = 1;
    co_return;
  }
  publish_config_state();
  const std::string boot_id = read_boot_id();
  const auto record = run_record_path(config_.config.state_dir);
  (void)api_.fs.create_directories(record.parent_path(), 0755);
  auto previous = previous_unclean_run(api_.fs, record, boot_id);
  run_record_ = run_record(info_.version, iso8601(info_.started_wall), boot_id);
  if (auto r = api_.fs.write_file_atomic(record, boost::json::serialize(run_record_), 0644); !r)
    log_->warn("run record: {}", r.error().message);
  for (auto& t : tasks_) start(*t);
  if (previous) {
    // After the subsystems have started (the control channel listens for events by then):
    // the control plane learns of it after the next connect.
    co_await asio::post(ioc_, asio::use_awaitable);
    log_->warn("{}", previous->message);
    api_.state.emit("daemon", "previous_run_ended", previous->message, std::move(previous->data));
  }

  if (auto wd = api_.notifier.watchdog_timeout()) {
    log_->info("systemd watchdog enabled: pinging every {} ms", wd->count() / 2000);
    asio::co_spawn(ioc_, watchdog_loop(api_.clock, api_.notifier, *wd),
                   asio::bind_cancellation_slot(watchdog_signal_.slot(), asio::detached));
  }

  info_.phase = "running";
  api_.notifier.notify("READY=1\nSTATUS=running");
  {
    LogFields fields{{"MESSAGE_ID", msgid::kAgentStarted}};
    log_->info("instanced {} ready (config {}, hash {})", info_.version, config_.file.string(),
               config_.hash.substr(0, 12));
  }

  for (;;) {
    int sig = co_await signals.async_wait(asio::use_awaitable);
    if (sig == SIGHUP) {
      co_await reload();
      continue;
    }
    log_->info("received {}, shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    break;
  }
  co_await shutdown();
}

asio::awaitable<void> Daemon::reload() {
  timespec ts{};
  clock_gettime(CLOCK_MONOTONIC, &ts);
  api_.notifier.notify(fmt::format("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading configuration",
                                   static_cast<long long>(ts.tv_sec) * 1000000 + ts.tv_nsec / 1000));
  info_.phase = "reloading";
  // Off the loop and bounded: the files are hostile until read (a slow or hung file system
  // under /etc must not stall the agent or its watchdog).
  // Named, not temporaries inside the co_await expression (GCC 12 freed such captures twice).
  const std::string what = "reading the configuration";
  auto read = [file = config_.file] { return load_config(file); };
  auto loaded = co_await api_.pool.run(what, kReloadTimeout, read);
  status::ReloadOutcome outcome{loaded.ok(), api_.clock.wall_now(), {}};
  if (!loaded) {
    outcome.error = loaded.error().message;
    {
      LogFields fields{{"MESSAGE_ID", msgid::kConfigReloadFailed}};
      log_->error("reload rejected, keeping the running configuration:\n{}", outcome.error);
    }
    api_.state.metrics().add_counter("instanced_config_reloads_total", "Configuration reloads by result.",
                                     {{"result", "failed"}});
    api_.state.emit("config", "reload_failed", outcome.error);
  } else {
    config_ = std::move(*loaded);
    if (options_.log_level) config_.config.log.level = *options_.log_level;
    api_.logging.set_level(config_.config.log.level);
    for (auto& t : tasks_)
      if (t->reconfigure) t->reconfigure(config_.config);
    info_.instance = instance_name(config_.config);
    info_.dropins = config_.dropins;
    info_.config_hash = config_.hash;
    info_.config_loaded_at = outcome.at;
    {
      LogFields fields{{"MESSAGE_ID", msgid::kConfigReloaded}};
      log_->info("configuration reloaded (hash {})", config_.hash.substr(0, 12));
    }
    api_.state.metrics().add_counter("instanced_config_reloads_total", "Configuration reloads by result.",
                                     {{"result", "ok"}});
    api_.state.emit("config", "reloaded", "configuration reloaded", {{"hash", config_.hash}});
  }
  info_.last_reload = outcome;
  publish_config_state();
  info_.phase = "running";
  api_.notifier.notify(loaded ? std::string("READY=1\nSTATUS=running")
                              : std::string("READY=1\nSTATUS=running (last reload failed, see journal)"));
  co_return;
}

asio::awaitable<void> Daemon::shutdown() {
  api_.notifier.notify("STOPPING=1\nSTATUS=stopping");
  {
    LogFields fields{{"MESSAGE_ID", msgid::kAgentStopping}};
    log_->info("stopping");
  }
  info_.phase = "stopping";
  const auto deadline = api_.clock.now() + config_.config.shutdown.timeout;
  // One terminal cancellation per subsystem, in reverse start order, each waited for before
  // the next (scripts end before the mounts they use are flushed). Only terminal: a
  // parallel group (a || b) forwards only the first cancellation it is given to its
  // children, and those see terminal only (co_spawn's default filter), so an earlier
  // `total` would leave them waiting for ever. Past the deadline each still gets a moment:
  // one that stops at once must not be reported as not stopping.
  std::vector<std::string> stuck;
  for (auto it = tasks_.rbegin(); it != tasks_.rend(); ++it) {
    Task& t = **it;
    if (t.done) continue;
    t.signal.emit(asio::cancellation_type::terminal);
    auto wait = std::max<std::chrono::steady_clock::duration>(deadline - api_.clock.now(), kGraceAfterDeadline);
    if (!t.done) co_await t.ended->sleep_for(api_.clock, wait);
    if (!t.done) stuck.push_back(t.subsystem->name());
  }
  if (!stuck.empty())
    log_->error("did not stop within shutdown.timeout ({}): {}", format_duration(config_.config.shutdown.timeout),
                fmt::join(stuck, ", "));
  watchdog_signal_.emit(asio::cancellation_type::terminal);
  log_->info("stopped");
  if (!stuck.empty()) log_->warn("exiting with subsystems still running");
  // A clean stop: the next start finds nothing to report.
  const auto clean = clean_stop_record(run_record_, iso8601(api_.clock.wall_now()));
  (void)api_.fs.write_file_atomic(run_record_path(config_.config.state_dir), boost::json::serialize(clean), 0644);
  // Every subsystem has returned (or ignored cancellation past the deadline). What is left
  // on the loop is meant to wait for ever, such as the SIGCHLD reaper: stop it.
  ioc_.stop();
}

}  // namespace instanced
