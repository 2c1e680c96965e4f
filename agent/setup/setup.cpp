#include "agent/setup/setup.hpp"

#include "common/message_ids.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"
#include "common/syscalls.hpp"

#include <algorithm>
#include <charconv>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace instanced::setup {
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kLogsKept = 5;               // per script
constexpr auto kLookupTimeout = std::chrono::seconds(10);

std::string random_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

std::string compact_time(Clock::wall_time t) {
  // 2026-11-27T14:14:50.123Z -> 20261127T141450Z
  std::string s = iso8601(t), out;
  for (char c : s.substr(0, 19))
    if (c != '-' && c != ':') out.push_back(c);
  return out + "Z";
}

}  // namespace

// The run in progress: started by this agent, or taken back after a restart.
struct Setup::Live {
  std::string name;
  std::string run_id;
  fs::path log;
  Clock::wall_time began;      // the run's start (its timeout counts from it)
  Clock::steady_time started;  // the same, for its duration
  std::optional<monitor::Run> run;  // once its monitor has started
};

Setup::Setup(asio::any_io_executor ex, Api& api, ProcessRunner& runner, const SetupConfig& config, std::string state_dir,
             Environment env, monitor::Launcher monitors)
    : ex_(ex),
      api_(api),
      runner_(runner),
      config_(config),
      state_dir_(std::move(state_dir)),
      env_(std::move(env)),
      monitors_(std::move(monitors)),
      log_(api.logging.get("setup")),
      done_(ex, "setup"),
      wake_(ex),
      runs_changed_(ex) {
  if (auto id = api_.fs.read_file("/proc/sys/kernel/random/boot_id", 128)) {
    boot_id_ = *id;
    while (!boot_id_.empty() && (boot_id_.back() == '\n' || boot_id_.back() == ' ')) boot_id_.pop_back();
  }
  fs::path file = fs::path(state_dir_) / "setup" / "state.json";
  std::error_code ec;
  if (fs::exists(file, ec)) {
    auto text = api_.fs.read_file(file, 16 << 20);
    auto parsed = text ? Records::parse(*text) : Result<Records>(text.error());
    if (parsed) {
      records_ = std::move(*parsed);
    } else {
      // Running scripts again on a guess could repeat a one-time setup: nothing runs
      // until a person repairs or removes the file.
      state_error_ = fmt::format("{}: {}; no script runs until it is repaired or removed", file.string(),
                                 parsed.error().message);
    }
  }
}

Setup::~Setup() = default;

void Setup::reconfigure(const SetupConfig& config) {
  for (const auto& before : config_.scripts) {
    auto kept = std::find_if(config.scripts.begin(), config.scripts.end(),
                             [&](const ScriptConfig& s) { return s.name == before.name; });
    if (kept == config.scripts.end()) api_.state.metrics().forget("instanced_setup_", "script", before.name);
  }
  config_ = config;
  wake_.pulse();  // scripts added to the list run now
  publish();
}

// ---- the loop ----------------------------------------------------------------------------

asio::awaitable<void> Setup::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  if (state_error_) log_->error("{}", *state_error_);
  publish();
  co_await recover_interrupted();
  for (;;) {
    co_await sequence();
    if (!reruns_.empty()) continue;
    if (dirty_) {
      persist();
      if (!dirty_) continue;  // recorded again: what waited for it runs now
    }
    // Until a rerun, a reload or (with records not yet written) 10 s to try writing them again.
    co_await wake_.sleep_until(api_.clock, dirty_ ? api_.clock.now() + 10s : Clock::steady_time::max());
  }
}

Setup::Decision Setup::decide(const ScriptConfig& s) const {
  auto it = records_.scripts.find(s.name);
  if (it == records_.scripts.end()) return Decision::run;
  const ScriptRecord& r = it->second;
  if (s.when == ScriptWhen::start && r.last.boot_id != boot_id_) return Decision::run;  // a new boot
  switch (r.state) {
    case ScriptState::succeeded: return Decision::done;
    case ScriptState::pending:
    case ScriptState::running: return Decision::run;
    default: return Decision::blocked;  // failed, timed out, interrupted: until a rerun
  }
}

asio::awaitable<void> Setup::sequence() {
  if (state_error_) {
    phase_ = "failed";
    publish();
    co_return;
  }
  if (dirty_) {
    phase_ = "waiting: the setup state cannot be written";
    publish();
    co_return;  // run() retries the write every 10 s and comes back
  }
  for (Gate* g : prerequisites_) {
    if (g->is_open()) continue;
    phase_ = "waiting for " + g->name();
    publish();
    co_await g->wait();
  }
  for (;;) {
    if (!reruns_.empty()) {
      std::string name = reruns_.front();
      reruns_.pop_front();
      if (const ScriptConfig* it = configured(name)) {
        // A copy: a reload may replace the list while the script runs.
        ScriptConfig copy = *it;  // NOLINT(performance-unnecessary-copy-initialization)
        co_await run_script(copy);
      } else {
        // Removed from the configuration since the rerun was asked for: nothing to wait for.
        std::erase_if(tickets_, [&](const auto& t) { return t.second == name; });
        runs_changed_.pulse();
      }
      continue;
    }
    std::optional<ScriptConfig> next;
    std::string blocked_by;
    for (const auto& s : config_.scripts) {
      auto d = decide(s);
      if (d == Decision::done) continue;
      if (d == Decision::blocked) {
        if (s.continue_on_error) continue;
        blocked_by = s.name;
        break;
      }
      next = s;
      break;
    }
    if (next) {
      if (dirty_) {
        phase_ = "waiting: the setup state cannot be written";
        publish();
        co_return;  // run() retries the write every 10 s and comes back
      }
      phase_ = "setting_up";
      co_await run_script(*next);
      continue;
    }
    if (blocked_by.empty()) {
      phase_ = "done";
      done_.open();
    } else {
      phase_ = "failed";
    }
    publish();
    co_return;
  }
}

// ---- one run ----------------------------------------------------------------------------

Result<std::vector<std::string>> Setup::command_line(const ScriptConfig& s) {
  std::vector<std::string> argv;
  if (!s.path.empty()) {
    argv.push_back(s.path);
  } else {
    // Inline content is passed as fd 3 (a sealed memfd), never written where other users
    // could read it or put on a command line.
    if (s.content.value.starts_with("#!"))
      argv.push_back("/dev/fd/3");
    else
      argv = {"/bin/sh", "/dev/fd/3"};
  }
  argv.insert(argv.end(), s.args.begin(), s.args.end());
  return argv;
}

std::vector<std::string> Setup::environment(const ScriptConfig& s, const UserIdentity& user,
                                            const std::string& run_id) const {
  std::map<std::string, std::string> env = login_environment(user);
  env.insert({{"INSTANCED_INSTANCE", env_.instance},
              {"INSTANCED_SCRIPT", s.name},
              {"INSTANCED_SCRIPT_WHEN", std::string(EnumNames<ScriptWhen>::names[static_cast<std::size_t>(s.when)])},
              {"INSTANCED_RUN_ID", run_id},
              {"INSTANCED_BOOT_ID", boot_id_},
              {"INSTANCED_SOCKET", env_.status_socket}});
  if (env_.extra)
    for (auto& [k, v] : env_.extra()) env[k] = v;
  for (const auto& [k, v] : s.environment) env[k] = v;
  return environment_entries(env);
}

// The processes carrying the run's INSTANCED_RUN_ID marker.
asio::awaitable<Result<std::vector<pid_t>>> Setup::marked(std::string run_id) {
  const std::string marker = "INSTANCED_RUN_ID=" + run_id;  // (GCC 12: a named local, not a temporary)
  co_return co_await find_marked(runner_, api_.pool, marker);
}

// Stops them (SIGTERM, SIGKILL after kill_grace); the processes found.
asio::awaitable<std::vector<pid_t>> Setup::kill_marked(std::string run_id) {
  const std::string marker = "INSTANCED_RUN_ID=" + run_id;
  co_return co_await stop_marked(runner_, api_.pool, api_.clock, log_, marker, config_.kill_grace);
}

// Every run recorded as running by an earlier agent: taken back, ended, or interrupted.
asio::awaitable<void> Setup::recover_interrupted() {
  std::vector<std::string> running;
  for (const auto& [name, rec] : records_.scripts)
    if (rec.state == ScriptState::running) running.push_back(name);
  for (const auto& name : running) co_await recover_run(name);
}

// A run an earlier agent left running, from its run folder: its monitor still runs (taken
// back and followed to its end), it ended while the agent was away (its end recorded), or
// neither (interrupted: what is left of it killed, the `interrupted` policy applied).
asio::awaitable<void> Setup::recover_run(std::string name) {
  const RunRecord last = records_.scripts[name].last;
  const fs::path dir = run_folder(last.run_id);
  std::error_code ec;
  if (!fs::exists(dir, ec)) {  // recorded before its monitor was started, or by an agent before monitors
    co_await interrupt(name, "the agent stopped while it ran");
    co_return;
  }
  auto look = [this, dir] { return monitor::Run::find(api_.fs, dir); };
  auto found = co_await api_.pool.run("reading script " + name + "'s run folder", kLookupTimeout, look);
  if (!found) {
    co_await interrupt(name, found.error().message);
    co_return;
  }
  if (auto* gone = std::get_if<monitor::Run::Gone>(&*found)) {
    co_await interrupt(name, gone->reason);
    co_return;
  }
  const auto began = parse_iso8601(last.started).value_or(api_.clock.wall_now());
  live_ = std::make_unique<Live>(Live{name, last.run_id, last.log, began,
                                      api_.clock.now() - std::chrono::duration_cast<Duration>(api_.clock.wall_now() - began),
                                      std::nullopt});
  if (auto* run = std::get_if<monitor::Run>(&*found)) {
    log_->info("script {}: still running under its monitor (pid {}); taken back", name, run->pid());
    live_->run = std::move(*run);
    publish();
    co_await follow(name);
    co_return;
  }
  log_->info("script {}: ended while the agent was stopped", name);
  RunRecord r = last;
  std::vector<std::string> tail;
  const ScriptState outcome = co_await outcome_of(std::get<monitor::WorkloadExit>(*found), r, tail);
  end_run(name, std::move(r), outcome, std::move(tail));
}

// A run whose monitor is gone without a record: what is left of it is killed, and it is
// marked interrupted or queued again (setup.interrupted).
asio::awaitable<void> Setup::interrupt(std::string name, std::string why) {
  std::vector<pid_t> left = co_await kill_marked(records_.scripts[name].last.run_id);
  ScriptRecord& r = records_.scripts[name];  // the map is not changed meanwhile
  r.last.leftovers.assign(left.begin(), left.end());
  r.last.reason = left.empty() ? why
                               : fmt::format("{}; {} of its processes were still running and were killed", why, left.size());
  r.last.ended = iso8601(api_.clock.wall_now());
  r.state = config_.interrupted == OnInterrupt::rerun ? ScriptState::pending : ScriptState::interrupted;
  log_->warn("script {}: {} (run {}); {}", name, r.last.reason, r.last.run_id,
             r.state == ScriptState::pending ? "it runs again" : "marked interrupted until a rerun");
  api_.state.emit("setup", "script_interrupted", fmt::format("script {}: {}", name, r.last.reason),
                  {{"name", name}, {"run", to_json(r.last)}, {"state", to_string(r.state)}});
  live_.reset();
  remove_run_folder(r.last.run_id);
  persist();
}

// One run of a script, top to bottom: recorded as begun, its monitor started, followed to
// its end (or to the agent's stop), recorded and told.
asio::awaitable<void> Setup::run_script(const ScriptConfig& script) {
  auto begun = begin_run(script);
  if (!begun) co_return;  // not recorded: the loop retries
  auto launched = co_await launch_script(script, begun->run_id);
  if (!launched) {
    RunRecord run = records_.scripts[script.name].last;
    run.reason = launched.error().message;
    RunLog log(live_->log, config_.max_log_bytes.bytes, static_cast<std::size_t>(config_.tail_lines), {});
    log.feed("[instanced: " + run.reason + "]\n");
    run.layout = log.finish();
    end_run(script.name, std::move(run), ScriptState::failed, log.last_lines());
    co_return;
  }
  live_->run = std::move(*launched);
  publish();
  co_await follow(script.name);
}

// The run in progress to its end, then recorded. When the agent stops meanwhile the script
// runs on under its monitor, still recorded as running: the next start takes it back.
asio::awaitable<void> Setup::follow(std::string name) {
  RunRecord run = records_.scripts[name].last;
  std::vector<std::string> tail;
  ScriptState outcome = ScriptState::failed;
  try {
    co_await live_->run->ended(ex_, api_.clock, api_.fs);
    auto record = live_->run->exit_record(api_.fs);
    if (!record) {
      co_await interrupt(name, record.error().message);
      co_return;
    }
    outcome = co_await outcome_of(*record, run, tail);
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) throw;
    log_->info("script {} runs on under its monitor while the agent is stopped (run {})", name, run.run_id);
    live_.reset();
    throw;
  }
  end_run(name, std::move(run), outcome, std::move(tail));
}

// The run recorded as `running` (on disk before the monitor exists: a crash from here on
// is seen as an interrupted run), its start told. Nothing when it cannot be recorded (disk
// full): a run that no record knows of could run a create script twice.
std::optional<RunRecord> Setup::begin_run(const ScriptConfig& script) {
  const std::string& name = script.name;
  RunRecord run;
  run.run_id = random_id();
  run.boot_id = boot_id_;
  const auto started_wall = api_.clock.wall_now();
  run.started = iso8601(started_wall);
  fs::path dir = fs::path(config_.log_dir) / name;
  if (auto r = api_.fs.create_directories(dir, 0750); !r) log_->warn("{}", r.error().message);
  fs::path file = dir / fmt::format("{}-{}.log", compact_time(started_wall), run.run_id.substr(0, 8));
  run.log = file.string();
  const std::optional<ScriptRecord> before = records_.scripts.contains(name)
                                                  ? std::optional<ScriptRecord>(records_.scripts[name])
                                                  : std::nullopt;
  ScriptRecord& rec = records_.scripts[name];
  rec.state = ScriptState::running;
  rec.runs += 1;
  rec.last = run;
  persist();
  if (dirty_) {
    if (before)
      records_.scripts[name] = *before;
    else
      records_.scripts.erase(name);
    return std::nullopt;
  }
  live_ = std::make_unique<Live>(Live{name, run.run_id, file, started_wall, api_.clock.now(), std::nullopt});
  publish();
  {
    LogFields fields{{"MESSAGE_ID", msgid::kScriptStarted}, {"INSTANCED_SCRIPT", name}, {"INSTANCED_RUN", run.run_id}};
    log_->info("script {} ({}) starting, run {}, log {}", name,
               EnumNames<ScriptWhen>::names[static_cast<std::size_t>(script.when)], run.run_id, file.string());
  }
  api_.state.emit("setup", "script_started", fmt::format("script {} started", name),
                  {{"name", name}, {"run_id", run.run_id}, {"log", run.log}});
  return run;
}

// The user looked up and the script's folders touched off the loop (NSS and stat may block:
// LDAP, a hung network or FUSE mount), bounded, so that a hung mount fails the run with a
// timeout instead of stalling the loop; then the script's monitor started on its spec.
asio::awaitable<Result<monitor::Run>> Setup::launch_script(const ScriptConfig& script, std::string run_id) {
  const std::string user_name = script.user;
  const std::string what = fmt::format("looking up user {} and the script's folders", user_name);
  const std::string workdir = script.working_directory, program = script.path;
  auto lookup = [user_name, workdir, program]() -> Result<std::pair<UserIdentity, bool>> {
    auto u = lookup_user(user_name);
    if (!u) return u.error();
    struct stat st {};
    bool home_exists = ::stat(u->home.c_str(), &st) == 0 && S_ISDIR(st.st_mode);
    if (!workdir.empty()) (void)::stat(workdir.c_str(), &st);
    if (!program.empty()) (void)::stat(program.c_str(), &st);
    return std::make_pair(std::move(*u), home_exists);
  };
  auto found = co_await api_.pool.run(what, kLookupTimeout, lookup);
  if (!found) co_return found.error();
  const UserIdentity& user = found->first;
  monitor::WorkloadSpec w;
  w.name = "script " + script.name;
  w.spawn.argv = *command_line(script);
  w.spawn.env = environment(script, user, run_id);
  w.spawn.cwd = !script.working_directory.empty() ? script.working_directory : found->second ? user.home : "/";
  if (user.uid != ::geteuid()) w.spawn.user = user;
  w.inline_script = script.content.value;  // the script's fd 3, in a sealed memfd
  w.timeout = script.timeout;
  w.kill_grace = config_.kill_grace;
  w.started = live_->began;
  w.log_file = live_->log.string();
  w.max_log_bytes = config_.max_log_bytes.bytes;
  w.tail_lines = static_cast<std::size_t>(config_.tail_lines);
  w.journal = api_.logging.journald();
  w.journal_identifier = "instanced-setup";
  w.journal_field = "INSTANCED_SCRIPT";
  w.journal_value = script.name;
  w.marker = "INSTANCED_RUN_ID=" + run_id;
  w.keep_left_behind = script.leftover_processes == Leftovers::keep;
  monitor::Launcher launcher = monitors_;
  // Under systemd, a kept daemon must outlive the unit's monitor: only the monitor is its main process.
  if (w.keep_left_behind) launcher.properties.push_back("KillMode=process");
  const std::string unit = fmt::format("instanced-setup-{}-{}.service", script.name, run_id.substr(0, 8));
  co_return co_await monitor::Run::launch(runner_, api_.fs, api_.clock, std::move(launcher), run_folder(run_id), unit,
                                          std::move(w));
}

// How the run ended, from its monitor's record; what it left behind is listed (kept) or
// was stopped by the monitor (killed).
asio::awaitable<ScriptState> Setup::outcome_of(const monitor::WorkloadExit& e, RunRecord& run,
                                               std::vector<std::string>& tail) {
  using monitor::Outcome;
  const std::string name = live_->name;
  run.layout = e.layout;
  tail = e.tail;
  run.leftovers.assign(e.left_behind.begin(), e.left_behind.end());
  if (e.outcome == Outcome::not_started) {
    run.reason = e.reason;
    co_return ScriptState::failed;
  }
  run.exit_code = e.status.signal ? std::nullopt : std::optional<int>(e.status.code);
  run.signal = e.status.signal;
  if (!e.left_behind.empty()) log_->info("script {}: killed {} leftover processes", name, e.left_behind.size());
  const ScriptConfig* script = configured(name);  // none: removed by a reload since it started
  const bool kept = !script || script->leftover_processes == Leftovers::keep;
  if (e.outcome == Outcome::exited && kept) {  // else its monitor has stopped them
    auto left = co_await marked(run.run_id);
    if (left && !left->empty()) {
      run.leftovers.assign(left->begin(), left->end());
      log_->info("script {}: left {} processes running (leftover_processes: keep)", name, left->size());
    }
  }
  switch (e.outcome) {
    case Outcome::timed_out:
      run.reason = !script ? std::string("timed out; its processes were killed")
                           : fmt::format("timed out after {}; its processes were killed", format_duration(script->timeout));
      co_return ScriptState::timed_out;
    case Outcome::cancelled:  // its monitor was stopped by someone else (systemctl stop)
      run.reason = "cancelled: its monitor was stopped";
      co_return ScriptState::failed;
    default:
      break;
  }
  if (e.status.success()) co_return ScriptState::succeeded;
  run.reason = e.status.describe();
  co_return ScriptState::failed;
}

// The run's outcome recorded, counted and told; its run folder removed (its spec holds
// the script's environment); waiting reruns answered.
void Setup::end_run(const std::string& name, RunRecord run, ScriptState outcome, std::vector<std::string> tail) {
  const Clock::steady_time started = live_->started;
  live_.reset();
  remove_run_folder(run.run_id);
  run.ended = iso8601(api_.clock.wall_now());
  run.duration_seconds = std::max(0.0, std::chrono::duration<double>(api_.clock.now() - started).count());
  {
    ScriptRecord& rec = records_.scripts[name];
    rec.state = outcome;
    rec.last = run;
  }
  persist();
  prune_logs(name);
  const std::string result = std::string(to_string(outcome));
  api_.state.metrics().add_counter("instanced_setup_runs_total", "Setup script runs, by script and result",
                                   {{"script", name}, {"result", result}});
  api_.state.metrics().set_gauge("instanced_setup_last_duration_seconds", "Duration of the last run of each script",
                                 {{"script", name}}, run.duration_seconds);
  std::string msg = outcome == ScriptState::succeeded
                        ? fmt::format("script {} succeeded in {:.1f}s", name, run.duration_seconds)
                        : fmt::format("script {} {}: {}", name, result, run.reason);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kScriptFinished}, {"INSTANCED_SCRIPT", name}, {"INSTANCED_RUN", run.run_id}};
    if (outcome == ScriptState::succeeded)
      log_->info("{}", msg);
    else
      log_->error("{} (log {})", msg, run.log);
  }
  json::array tail_json;
  for (auto& l : tail) tail_json.emplace_back(l);
  api_.state.emit("setup", "script_finished", msg,
                  {{"name", name}, {"state", result}, {"run", to_json(run)}, {"tail", std::move(tail_json)}});
  for (auto it = tickets_.begin(); it != tickets_.end();) {
    if (it->second == name) {
      finished_tickets_[it->first] = name;
      it = tickets_.erase(it);
    } else {
      ++it;
    }
  }
  runs_changed_.pulse();
  publish();
}

fs::path Setup::run_folder(const std::string& run_id) const {
  return fs::path(state_dir_) / "setup" / (run_id + ".run");
}

void Setup::remove_run_folder(const std::string& run_id) {
  std::error_code ec;
  fs::remove_all(run_folder(run_id), ec);
}

void Setup::prune_logs(const std::string& script) {
  std::error_code ec;
  std::vector<fs::path> logs;
  for (fs::directory_iterator it(fs::path(config_.log_dir) / script, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".log") logs.push_back(it->path());
  if (logs.size() <= kLogsKept) return;
  std::sort(logs.begin(), logs.end());  // names start with the time
  for (std::size_t i = 0; i + kLogsKept < logs.size(); ++i) fs::remove(logs[i], ec);
}

void Setup::persist() {
  fs::path dir = fs::path(state_dir_) / "setup";
  auto made = api_.fs.create_directories(dir, 0700);
  auto r = made ? api_.fs.write_file_atomic(dir / "state.json", records_.to_json(), 0600) : Result<void>(made.error());
  if (!r) {
    if (!dirty_) log_->error("cannot record the setup state, retrying every 10s: {}", r.error().message);
    dirty_ = true;
    return;
  }
  if (dirty_) log_->info("setup state recorded again");
  dirty_ = false;
}

// ---- requests --------------------------------------------------------------------------

const ScriptConfig* Setup::configured(const std::string& name) const {
  auto it = std::find_if(config_.scripts.begin(), config_.scripts.end(), [&](const auto& s) { return s.name == name; });
  return it == config_.scripts.end() ? nullptr : &*it;
}

Result<std::string> Setup::rerun(const std::string& name) {
  if (!configured(name)) return Error{fmt::format("no setup script named '{}'", name), ErrorKind::not_found};
  if (state_error_) return Error{*state_error_};
  if (live_ && live_->name == name) return Error{fmt::format("script {} is running", name)};
  if (std::find(reruns_.begin(), reruns_.end(), name) != reruns_.end())
    return Error{fmt::format("a rerun of script {} is already queued", name)};
  reruns_.push_back(name);
  std::string ticket = random_id();
  tickets_[ticket] = name;
  wake_.pulse();
  log_->info("rerun of script {} requested", name);
  return ticket;
}

asio::awaitable<std::optional<ScriptRecord>> Setup::wait_for_run(std::string ticket) {
  for (;;) {
    if (auto it = finished_tickets_.find(ticket); it != finished_tickets_.end()) {
      std::string name = it->second;
      finished_tickets_.erase(it);
      co_return records_.scripts[name];
    }
    if (!tickets_.contains(ticket)) co_return std::nullopt;
    try {
      co_await runs_changed_.wait();
    } catch (const boost::system::system_error& e) {
      if (!is_cancelled(e)) throw;
      co_return std::nullopt;  // the agent stops: the command says so
    }
  }
}

asio::awaitable<void> Setup::until_no_run() {
  while (live_) co_await runs_changed_.wait();
}

asio::awaitable<Result<std::string>> Setup::drain(std::string action) {
  if (!live_) co_return std::string("no setup script running");
  const std::string name = live_->name;
  const auto t0 = api_.clock.now();
  waiting_drain_ = action;
  auto ended = until_no_run();
  auto limit = api_.clock.sleep_for(config_.stop_wait);
  auto either = std::move(ended) || std::move(limit);
  std::size_t first = 1;
  try {
    first = (co_await first_error(std::move(either))).index();
  } catch (...) {
    waiting_drain_.clear();
    throw;
  }
  waiting_drain_.clear();
  if (first == 0)
    co_return fmt::format("waited {:.1f}s for setup script {} to end",
                          std::chrono::duration<double>(api_.clock.now() - t0).count(), name);
  co_return Error{fmt::format("{} refused: setup script {} is still running after {}; ask again when it has ended "
                              "('instancectl setup' shows it)",
                              action, name, format_duration(config_.stop_wait))};
}

// ---- views -----------------------------------------------------------------------------

json::object Setup::status_json() const {
  json::array scripts;
  std::size_t done = 0;
  for (const auto& s : config_.scripts) {
    json::object o{{"name", s.name},
                   {"when", EnumNames<ScriptWhen>::names[static_cast<std::size_t>(s.when)]},
                   {"user", s.user},
                   {"timeout_seconds", std::chrono::duration<double>(s.timeout).count()}};
    auto it = records_.scripts.find(s.name);
    ScriptState state = ScriptState::pending;
    if (it != records_.scripts.end()) {
      const auto& r = it->second;
      bool this_boot = s.when == ScriptWhen::create || r.last.boot_id == boot_id_;
      state = this_boot ? r.state : ScriptState::pending;
      o["runs"] = r.runs;
      o["last_run"] = to_json(r.last);
    }
    if (state == ScriptState::succeeded) ++done;
    o["state"] = to_string(state);
    if (live_ && live_->name == s.name && live_->run)
      if (auto now = live_->run->read_log(live_->log, UINT64_MAX, 0)) o["output_bytes"] = now->next;
    scripts.push_back(std::move(o));
  }
  json::object out{{"phase", phase_}, {"boot_id", boot_id_}, {"succeeded", done}, {"total", config_.scripts.size()},
                   {"scripts", std::move(scripts)}};
  if (state_error_) out["error"] = *state_error_;
  if (live_) out["running"] = live_->name;
  if (!waiting_drain_.empty()) out["drain_waiting"] = waiting_drain_;  // a prepare_stop waits for the run
  return out;
}

void Setup::publish() {
  Health h = Health::starting;
  std::string summary;
  std::size_t total = config_.scripts.size(), ok = 0;
  for (const auto& s : config_.scripts)
    if (decide(s) == Decision::done) ++ok;
  if (state_error_) {
    h = Health::failed;
    summary = *state_error_;
  } else if (live_) {
    summary = fmt::format("setting_up: running {} ({} of {} done)", live_->name, ok, total);
  } else if (phase_ == "done") {
    h = Health::ok;
    summary = total == 0 ? "no setup scripts" : fmt::format("{} of {} scripts done", ok, total);
  } else if (phase_ == "failed") {
    h = Health::degraded;
    std::string which;
    for (const auto& s : config_.scripts)
      if (decide(s) == Decision::blocked) {
        auto& r = records_.scripts.at(s.name);
        which = fmt::format("script {} {}: {}; rerun with 'instancectl setup rerun {}'", s.name, to_string(r.state),
                            r.last.reason, s.name);
        if (!s.continue_on_error) break;
      }
    summary = which.empty() ? "setup failed" : which;
  } else {
    summary = phase_;
  }
  json::object details{{"phase", phase_}, {"succeeded", ok}, {"total", total}};
  if (live_) details["running"] = live_->name;
  api_.state.publish("setup", h, summary, std::move(details));
}

void Setup::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/setup", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
  router.add(status::http::verb::get, "/v1/setup/log", [this](const status::Request& req) { return log_response(req); });
  router.add(status::http::verb::post, "/v1/setup/rerun", [this](const status::Request& req) { return rerun_response(req); });
}

status::Response Setup::log_response(const status::Request& req) const {
  using S = status::http::status;
  auto name = status::query_param(req, "name");
  if (!name || name->empty()) return status::error_response(S::bad_request, "name: missing (?name=SCRIPT)");
  auto offset = status::offset_param(req, "from");
  if (!offset) return status::error_response(S::bad_request, "from: not a byte offset");
  const std::uint64_t from = *offset;
  constexpr std::size_t kChunk = 1 << 20;
  LogChunk chunk;
  bool running = false;
  if (live_ && live_->name == *name) {
    // Nothing yet before its monitor has started; at its end, the record (below) once kept.
    if (auto live = live_->run ? live_->run->read_log(live_->log, from, kChunk) : std::nullopt)
      chunk = std::move(*live);
    else
      chunk.next = from;
    running = true;
  } else {
    auto it = records_.scripts.find(*name);
    if (it == records_.scripts.end() || it->second.last.log.empty())
      return status::error_response(S::not_found, fmt::format("script {} has not run", *name));
    if (it->second.state == ScriptState::running)  // recorded as running by an agent that died
      return status::error_response(S::not_found, fmt::format("script {}: the log of the interrupted run is {}", *name, it->second.last.log));
    chunk = read_finished_log(it->second.last.log, it->second.last.layout, from, kChunk);
  }
  return status::log_chunk_response(std::move(chunk), running);
}

status::Response Setup::rerun_response(const status::Request& req) {
  using S = status::http::status;
  auto name = status::query_param(req, "name");
  if (!name || name->empty()) return status::error_response(S::bad_request, "name: missing (?name=SCRIPT)");
  auto ticket = rerun(*name);
  if (!ticket) {
    const bool unknown = ticket.error().kind == ErrorKind::not_found;
    return status::error_response(unknown ? S::not_found : S::conflict, ticket.error().message);
  }
  return status::json_response(S::accepted, json::serialize(json::object{{"name", *name}, {"ticket", *ticket}}));
}

}  // namespace instanced::setup
