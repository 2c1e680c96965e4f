#include "agent/mounts/mounts.hpp"

#include "common/proxy.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fmt/format.h>
#include <random>

#include "agent/mounts/blob_check.hpp"
#include "common/coro.hpp"
#include "common/message_ids.hpp"
#include "common/secret.hpp"
#include "common/text.hpp"
#include "common/wake.hpp"

namespace instanced::mounts {
namespace asio = boost::asio;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kTailBytes = 4096;  // of a helper's output, for the failure reason
constexpr auto kHelperStopWait = 2s;      // a FUSE server's time to end after SIGTERM (and SIGKILL)
constexpr std::uint64_t kDriverLogBytes = 1 << 20;

void keep_tail(std::string& tail, std::string_view more) {
  tail.append(more);
  if (tail.size() > kTailBytes) tail.erase(0, tail.size() - kTailBytes);
}

// The last non-empty lines of a helper's output, escaped, for a reason shown to people.
std::string last_lines(std::string_view out, std::size_t n = 2) {
  std::vector<std::string_view> lines;
  std::size_t pos = 0;
  while (pos < out.size()) {
    auto nl = out.find('\n', pos);
    if (nl == std::string_view::npos) nl = out.size();
    auto line = out.substr(pos, nl - pos);
    while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.remove_suffix(1);
    if (!line.empty()) lines.push_back(line);
    pos = nl + 1;
  }
  std::string joined;
  for (std::size_t i = lines.size() > n ? lines.size() - n : 0; i < lines.size(); ++i) {
    if (!joined.empty()) joined += " / ";
    joined += lines[i];
  }
  return escape_for_log(joined.substr(0, 400));
}

// A helper's output with the mount's secrets blanked (an error may echo a URL with its SAS).
std::string redact(std::string text, const Secrets& secrets) {
  for (const std::string* secret : {&secrets.key, &secrets.sas}) {
    if (secret->size() < 4) continue;
    for (auto p = text.find(*secret); p != std::string::npos; p = text.find(*secret, p + 3)) text.replace(p, secret->size(), "***");
  }
  return text;
}

bool stale_errno(int e) {
  return e == ENOTCONN || e == EIO || e == ESTALE || e == ECONNABORTED || e == EHOSTDOWN || e == ENODEV ||
         e == ECONNRESET;
}

// A plan without its secrets: what a mount is recognised by (driver, source, type).
MountPlan identity_of(MountPlan plan) {
  plan.env.clear();
  plan.files.clear();
  return plan;
}

bool up(MountState s) { return s == MountState::mounted || s == MountState::degraded; }

// A FUSE server, which keeps running while mounted, under its monitor (instanced-run,
// docs/monitor.md): it outlives the agent, which takes it back at its next start.
struct Helper {
  explicit Helper(asio::any_io_executor ex) : ended(ex) {}
  std::optional<monitor::Run> run;
  std::filesystem::path log;         // its output, written by the monitor
  std::string tail;                  // once it has ended: its last lines
  std::optional<ExitStatus> status;  // once it has ended
  Wake ended;                        // pulsed when it has exited

  // Its output's last bytes while it runs (its end's last lines once it has ended).
  std::string output_tail() const {
    if (status || !run) return tail;
    auto end = run->read_log(log, UINT64_MAX, 0);
    if (!end) return tail;
    auto chunk = run->read_log(log, end->next > kTailBytes ? end->next - kTailBytes : 0, kTailBytes);
    return chunk ? chunk->data : tail;
  }
};

// Until the driver's monitor has ended: how the driver ended, from its record.
asio::awaitable<void> watch_helper(std::shared_ptr<Helper> h, Wake& wake, Api& api, asio::any_io_executor ex) {
  try {
    co_await h->run->ended(ex, api.clock, api.fs);
  } catch (const boost::system::system_error&) {
    co_return;  // the agent stops: the driver runs on
  }
  auto record = h->run->exit_record(api.fs);
  if (!record) {
    h->status = ExitStatus{-1, 0};
    h->tail = record.error().message;
  } else if (record->outcome == monitor::Outcome::not_started) {
    h->status = ExitStatus{127, 0};
    h->tail = record->reason;
  } else {
    h->status = record->status;
    for (const auto& line : record->tail) h->tail += line + "\n";
  }
  h->ended.pulse();
  wake.pulse();
}

// Reads a short-lived helper's output into `out` (its tail) until it closes, then waits for
// its end.
asio::awaitable<ExitStatus> read_to_end(Process& proc, std::string& out) {
  char buf[2048];
  try {
    for (;;) {
      std::size_t n = co_await proc.read_output(std::span<char>(buf, sizeof buf));
      if (n == 0) break;
      keep_tail(out, std::string_view(buf, n));
    }
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
  }
  co_return co_await proc.wait();
}

}  // namespace

std::string_view to_string(MountState s) {
  switch (s) {
    case MountState::pending: return "pending";
    case MountState::mounting: return "mounting";
    case MountState::mounted: return "mounted";
    case MountState::degraded: return "degraded";
    case MountState::stale: return "stale";
    case MountState::hung: return "hung";
    case MountState::unmounted: return "unmounted";
    case MountState::failed: return "failed";
    case MountState::unmounting: return "unmounting";
    case MountState::drained: return "drained";
  }
  return "failed";
}

struct Mounts::Supervised {
  Supervised(asio::any_io_executor ex, MountConfig c) : config(std::move(c)), wake(ex), checked(ex), ex_(ex) {
    flight = std::make_unique<SingleFlight>(ex);
  }
  MountConfig config;
  MountState state = MountState::pending;
  MountState last_outcome = MountState::pending;  // the last state told in the log and events
  Reason last_reason = Reason::none;
  Clock::wall_time since{};
  Reason reason = Reason::none;
  std::string error;           // the last problem, for people (no secrets: helpers' output is escaped)
  std::optional<MountPlan> identity;  // driver, source and type of the last plan (its secrets dropped)
  std::unique_ptr<SingleFlight> flight;   // probes, syncfs and unmount of this mount
  std::vector<std::unique_ptr<SingleFlight>> abandoned;  // flights left blocked on a detached mount
  std::shared_ptr<Helper> helper;
  Wake wake;     // the next probe or attempt; pulsed by a reload, a remount, the helper's end
  Wake checked;  // pulsed when check() ends (a drain waits for it)
  asio::cancellation_signal cancel;
  bool done = false;
  bool remount_asked = false;
  bool attempt_due = true;     // nothing is mounted there: mount at next_attempt
  bool checking = false;       // check() is under way (drain waits for it)
  Clock::steady_time drained_until{};  // after a drain: not mounted again before this
  std::uint64_t attempts = 0;
  std::uint64_t remounts = 0;
  std::uint64_t failures = 0;  // in a row
  Clock::steady_time next_attempt{};
  std::optional<double> latency_ms;
  Clock::wall_time probed_at{};
  asio::any_io_executor ex_;
};

Mounts::Mounts(asio::any_io_executor ex, Api& api, ProcessRunner& runner, MountOps& ops, const StorageConfig& config,
               const ProxyConfig& proxy, const std::string& state_dir, monitor::Launcher monitors)
    : ex_(ex),
      api_(api),
      runner_(runner),
      ops_(ops),
      config_(config),
      proxy_(proxy),
      secrets_dir_(state_dir + "/mounts"),
      monitors_(std::move(monitors)),
      log_(api.logging.get("mounts")),
      ready_(ex, "mounts") {
  for (const auto& m : config_.mounts) mounts_.push_back(std::make_unique<Supervised>(ex, m));
}

Mounts::~Mounts() = default;

void Mounts::reconfigure(const StorageConfig& config, const ProxyConfig& proxy) {
  proxy_ = proxy;
  auto mounts = config_.mounts;
  config_ = config;
  if (config.mounts != mounts) {
    log_->warn("storage.mounts changed: the list of mounts is read at start; restart the agent to apply it");
    config_.mounts = std::move(mounts);
  }
  for (auto& s : mounts_) s->wake.pulse();
}

Tools Mounts::tools() const {
  return Tools{ops_.find_program(config_.mount_cifs), ops_.find_program(config_.smbclient),
               ops_.find_program(config_.blobfuse2), ops_.find_program(config_.rclone)};
}

asio::awaitable<bool> Mounts::rclone_knows_devname(const std::string& rclone) {
  if (auto known = rclone_devname_.find(rclone); known != rclone_devname_.end()) co_return known->second;
  SpawnSpec spec = spec_for({rclone, "mount", "--help"}, {});
  spec.capture_output = true;
  auto [status, out] = co_await run_helper(spec);
  // A program that could not be started (127) or did not answer in time (killed) is asked
  // again at the next attempt; one that answered is not asked again, whatever it said (a
  // program that fails on --help is not taken for an old rclone).
  const bool answered = status.signal == 0 && status.code != 127;
  const bool knows = !status.success() || out.find("--devname") != std::string::npos;
  if (answered) rclone_devname_[rclone] = knows;
  co_return knows;
}

Result<Secrets> Mounts::read_secrets(const MountConfig& m) const {
  Secrets s;
  if (!m.key_file.empty()) {
    auto k = read_secret_file(m.key_file, fmt::format("mount '{}': key_file", m.name));
    if (!k) return k.error();
    s.key = k->reveal();
  }
  if (!m.sas_file.empty()) {
    auto k = read_secret_file(m.sas_file, fmt::format("mount '{}': sas_file", m.name));
    if (!k) return k.error();
    s.sas = k->reveal();
    if (!s.sas.empty() && s.sas.front() == '?') s.sas.erase(0, 1);
  }
  return s;
}

std::optional<MountEntry> Mounts::mounted_at(const std::string& mount_point) {
  auto info = ops_.mountinfo();
  if (!info) return std::nullopt;
  return find_mount(parse_mountinfo(*info), mount_point);
}

SpawnSpec Mounts::spec_for(const std::vector<std::string>& argv, const std::vector<std::string>& env) const {
  SpawnSpec spec;
  spec.argv = argv;
  const char* path = std::getenv("PATH");
  spec.env.push_back(std::string("PATH=") + (path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"));
  spec.env.push_back("HOME=/root");
  spec.env.push_back("LC_ALL=C");  // helpers' messages in English: they are classified
  spec.env.insert(spec.env.end(), env.begin(), env.end());
  return spec;
}

void Mounts::set_state(Supervised& s, MountState to, Reason reason, std::string error) {
  const MountState from = s.state;
  s.reason = reason;
  s.error = std::move(error);
  if (from == to) return;
  s.state = to;
  s.since = api_.clock.wall_now();
  if (to == MountState::mounting || to == MountState::unmounting) return;  // steps, not outcomes
  // Another failed attempt for the same reason is not news: the first one was told.
  if (to == s.last_outcome && reason == s.last_reason && to == MountState::failed) return;
  const MountState told = s.last_outcome;
  s.last_outcome = to;
  s.last_reason = reason;
  std::string msg = fmt::format("{}: {} -> {}{}{}", s.config.name, to_string(told), to_string(to),
                                s.error.empty() ? "" : ": ", s.error);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kMountStateChanged}, {"INSTANCED_MOUNT", s.config.name}};
    if (up(to) || to == MountState::drained || reason == Reason::none)
      log_->info("{}", msg);
    else
      log_->warn("{}", msg);
  }
  api_.state.emit("mounts", "mount_state_changed", msg,
                  {{"mount", s.config.name},
                   {"from", std::string(to_string(told))},
                   {"to", std::string(to_string(to))},
                   {"reason", std::string(to_string(reason))},
                   {"error", s.error}});
}

void Mounts::failed_attempt(Supervised& s, Reason reason, std::string error) {
  s.failures += 1;
  auto backoff = config_.backoff_initial;
  for (std::uint64_t i = 1; i < s.failures && backoff < config_.backoff_max; ++i) backoff *= 2;
  backoff = std::min(backoff, config_.backoff_max);
  s.next_attempt = api_.clock.now() + backoff;
  s.attempt_due = true;
  set_state(s, MountState::failed, reason, fmt::format("{} (attempt {}; next in {})", error, s.attempts, format_duration(backoff)));
}

asio::awaitable<std::pair<ExitStatus, std::string>> Mounts::run_helper(const SpawnSpec& spec) {
  auto spawned = runner_.spawn(spec);
  if (!spawned) co_return std::pair{ExitStatus{127, 0}, spawned.error().message};
  std::unique_ptr<Process> proc = std::move(*spawned);
  std::string out;
  std::optional<ExitStatus> status;
  try {
    // mount_timeout bounds the whole run: its output and its end (a helper may close its
    // output and go on).
    using namespace asio::experimental::awaitable_operators;
    auto ran = read_to_end(*proc, out);
    auto limit = api_.clock.sleep_for(config_.mount_timeout);
    auto either = std::move(ran) || std::move(limit);
    auto first = co_await first_error(std::move(either));
    if (first.index() == 0) status = std::get<0>(first);
  } catch (const boost::system::system_error&) {  // the agent stops
    proc->signal_group(SIGKILL);
    throw;
  }
  if (status) co_return std::pair{*status, out};
  proc->signal_group(SIGKILL);
  ExitStatus killed = co_await proc->wait();
  out += fmt::format("\ntimed out after {}", format_duration(config_.mount_timeout));
  co_return std::pair{killed, out};
}

asio::awaitable<Result<void>> Mounts::tcp_check(const std::string& host, unsigned port) {
  struct Shared {
    explicit Shared(asio::any_io_executor ex) : resolver(ex), socket(ex), timer(ex) {}
    tcp::resolver resolver;
    tcp::socket socket;
    asio::steady_timer timer;
    bool expired = false;
  };
  auto sh = std::make_shared<Shared>(ex_);
  sh->timer.expires_after(config_.connect_timeout);
  sh->timer.async_wait([weak = std::weak_ptr<Shared>(sh)](boost::system::error_code ec) {
    auto sh = weak.lock();
    if (ec || !sh) return;
    sh->expired = true;
    sh->resolver.cancel();
    boost::system::error_code ignored;
    sh->socket.close(ignored);
  });
  boost::system::error_code ec;
  const std::string service = std::to_string(port);
  auto results = co_await sh->resolver.async_resolve(host, service, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    sh->timer.cancel();
    if (sh->expired) co_return Error{fmt::format("cannot resolve {} within {}", host, format_duration(config_.connect_timeout))};
    co_return Error{fmt::format("cannot resolve {}: {}", host, ec.message())};
  }
  co_await asio::async_connect(sh->socket, results, asio::redirect_error(asio::use_awaitable, ec));
  sh->timer.cancel();
  if (sh->expired)
    co_return Error{fmt::format("no answer from {} port {} within {}", host, port, format_duration(config_.connect_timeout))};
  if (ec) co_return Error{fmt::format("cannot connect to {} port {}: {}", host, port, ec.message())};
  co_return Result<void>{};
}

// One mount attempt, top to bottom: the credentials and the plan, the files and folders it
// needs, then the driver's own way of mounting.
asio::awaitable<void> Mounts::attempt(Supervised& s) {
  s.attempts += 1;
  s.attempt_due = false;
  set_state(s, MountState::mounting, Reason::none, "");
  publish();
  auto secrets = read_secrets(s.config);
  if (!secrets) {
    failed_attempt(s, Reason::other, secrets.error().message);
    co_return;
  }
  Tools found = tools();
  if (!found.rclone.empty() && s.config.type == MountType::blob) found.rclone_devname = co_await rclone_knows_devname(found.rclone);
  auto plan = plan_mount(s.config, config_, *secrets, found, secrets_dir_);
  if (!plan) {
    failed_attempt(s, Reason::driver_missing, plan.error().message);
    co_return;
  }
  s.identity = identity_of(*plan);
  std::optional<Failed> failed = co_await prepare_mount(s, *plan);
  if (!failed && plan->stays_running)
    failed = co_await mount_fuse(s, *plan, *secrets);
  else if (!failed)
    failed = co_await mount_once(s, *plan, *secrets);
  if (failed) {
    failed_attempt(s, failed->reason, std::move(failed->message));
    co_return;
  }
  s.failures = 0;
  set_state(s, MountState::mounted, Reason::none, "");
  publish();
}

// The credential files, the mount point and the cache folder.
asio::awaitable<std::optional<Mounts::Failed>> Mounts::prepare_mount(Supervised& s, const MountPlan& plan) {
  if (auto r = api_.fs.create_directories(secrets_dir_, 0700); !r) co_return Failed{Reason::other, r.error().message};
  for (const auto& f : plan.files)
    if (auto r = api_.fs.write_file_atomic(f.path, f.content, 0600); !r) co_return Failed{Reason::other, r.error().message};
  // On the pool: a parent may be a hung mount.
  std::string mp = s.config.mount_point, cache = plan.cache_dir;
  // (GCC 12: no temporaries with destructors inside a co_await expression; named locals.)
  auto make_dirs = [ops = &ops_, mp, cache]() -> Result<void> {
    if (int e = ops->make_directory(mp, 0755)) return Error{fmt::format("cannot create {}: {}", mp, std::strerror(e))};
    if (!cache.empty())
      if (int e = ops->make_directory(cache, 0700)) return Error{fmt::format("cannot create {}: {}", cache, std::strerror(e))};
    return {};
  };
  const std::string creating = "creating " + mp;
  auto dirs = co_await api_.pool.run(creating, config_.probe_timeout, make_dirs);
  if (!dirs) co_return Failed{Reason::other, dirs.error().message};
  co_return std::nullopt;
}

// SMB: the port first (outbound 445 is blocked by many networks), then the credentials and
// the share (the precheck), then mount.cifs, which returns once mounted.
asio::awaitable<std::optional<Mounts::Failed>> Mounts::mount_once(Supervised& s, const MountPlan& plan,
                                                                  const Secrets& secrets) {
  auto reach = co_await tcp_check(plan.host, plan.port);
  if (!reach)
    co_return Failed{Reason::port_blocked, fmt::format("port {} blocked or unreachable: {}", plan.port, reach.error().message)};
  if (!plan.precheck_argv.empty()) {
    auto spec = spec_for(plan.precheck_argv, {});
    auto [status, raw] = co_await run_helper(spec);
    const std::string out = redact(raw, secrets);
    if (!status.success()) {
      Reason r = classify_output(out);
      co_return Failed{r, fmt::format("{} check: {} ({})", r == Reason::auth_failed ? "credentials" : "share", last_lines(out),
                                      status.describe())};
    }
  }
  auto spec = spec_for(plan.argv, plan.env);
  auto [status, raw] = co_await run_helper(spec);
  const std::string out = redact(raw, secrets);
  if (!status.success())
    co_return Failed{classify_output(out), fmt::format("{}: {} ({})", plan.argv[0], last_lines(out), status.describe())};
  const std::string& mp = s.config.mount_point;
  auto entry = mounted_at(mp);
  if (!entry || !matches(plan, *entry))
    co_return Failed{Reason::other,
                     fmt::format("{} succeeded but {} is not a {} mount of {}", plan.argv[0], mp, plan.fstype, plan.source)};
  co_return std::nullopt;
}

// Blob: the credentials and the container, checked by one request of the agent's own; then
// the FUSE helper, which is the file system: mounted once mountinfo shows it.
asio::awaitable<std::optional<Mounts::Failed>> Mounts::mount_fuse(Supervised& s, const MountPlan& plan,
                                                                  const Secrets& secrets) {
  // The drivers read the proxy from their environment (never their command line).
  auto proxy_env = proxy_environment(proxy_);
  if (!proxy_env) co_return Failed{Reason::other, proxy_env.error().message};
  auto checking = check_blob_access(ex_, s.config, secrets, config_.probe_timeout, proxy_);
  auto access = co_await std::move(checking);
  if (access.reason != Reason::none) co_return Failed{access.reason, fmt::format("container check: {}", access.message)};
  auto launched = co_await launch_driver(s, plan, *proxy_env);
  if (!launched) co_return Failed{Reason::driver_missing, launched.error().message};
  follow_driver(s, std::move(*launched));
  auto h = s.helper;
  const std::string& mp = s.config.mount_point;
  const auto deadline = api_.clock.now() + config_.mount_timeout;
  for (;;) {
    auto entry = mounted_at(mp);
    if (entry && matches(plan, *entry)) co_return std::nullopt;
    if (h->status) {
      const std::string tail = redact(h->output_tail(), secrets);
      co_return Failed{classify_output(tail),
                       fmt::format("{} exited ({}): {}", plan.driver, h->status->describe(), last_lines(tail))};
    }
    if (api_.clock.now() >= deadline) {
      const std::string tail = redact(h->output_tail(), secrets);
      h->run->cancel(api_.fs);
      co_return Failed{Reason::timed_out, fmt::format("{} did not mount {} within {}: {}", plan.driver, mp,
                                                      format_duration(config_.mount_timeout), last_lines(tail))};
    }
    co_await s.wake.sleep_for(api_.clock, 100ms);  // mountinfo is looked at again; the helper's end cuts it short
  }
}

// The driver started under its monitor, as a unit instanced-mount-NAME-RANDOM.service of
// instanced-mounts.slice under systemd: its spec (with the secrets of its environment) is
// mode 0600 in the mount's run folder, as is its output.
asio::awaitable<Result<monitor::Run>> Mounts::launch_driver(Supervised& s, const MountPlan& plan,
                                                           const std::vector<std::string>& proxy_env) {
  monitor::WorkloadSpec w;
  w.name = fmt::format("mount {} ({})", s.config.name, plan.driver);
  w.spawn = spec_for(plan.argv, plan.env);
  w.spawn.env.insert(w.spawn.env.end(), proxy_env.begin(), proxy_env.end());
  w.kill_grace = kHelperStopWait;
  w.started = api_.clock.wall_now();
  w.log_file = driver_log(s).string();
  w.max_log_bytes = kDriverLogBytes;
  w.tail_lines = 20;
  w.journal = api_.logging.journald();
  // A new name each time: the unit of a driver just stopped may not be collected yet.
  const std::string unit = fmt::format("instanced-mount-{}-{:08x}.service", s.config.name, std::random_device{}());
  co_return co_await monitor::Run::launch(runner_, api_.fs, api_.clock, monitors_, run_folder(s), unit, std::move(w));
}

// The mount's driver from now on: its end wakes the mount's supervisor.
void Mounts::follow_driver(Supervised& s, monitor::Run run) {
  auto h = std::make_shared<Helper>(ex_);
  h->run = std::move(run);
  h->log = driver_log(s);
  s.helper = h;
  asio::co_spawn(ex_, watch_helper(h, s.wake, api_, ex_), asio::detached);
}

// At start: a driver an earlier agent started, whose monitor still runs, is this mount's
// again (its mount is then adopted as it is, not mounted again).
asio::awaitable<void> Mounts::take_back_driver(Supervised& s) {
  const std::filesystem::path dir = run_folder(s);
  std::error_code ec;
  if (!std::filesystem::exists(dir, ec)) co_return;
  auto look = [this, dir] { return monitor::Run::find(api_.fs, dir); };
  auto found = co_await api_.pool.run("reading mount " + s.config.name + "'s run folder", config_.probe_timeout, look);
  if (!found) co_return;
  if (auto* run = std::get_if<monitor::Run>(&*found)) {
    log_->info("{}: its driver still runs under its monitor (pid {}); taken back", s.config.name, run->pid());
    follow_driver(s, std::move(*run));
  }
}

std::filesystem::path Mounts::run_folder(const Supervised& s) const {
  return std::filesystem::path(secrets_dir_) / (s.config.name + ".run");
}

std::filesystem::path Mounts::driver_log(const Supervised& s) const { return run_folder(s) / "driver.log"; }

// Stops using the mount: the FUSE server is stopped (which also ends requests blocked in
// it), then the mount point is detached (lazily: processes with open files keep them).
asio::awaitable<void> Mounts::detach(Supervised& s, bool lazy) {
  // A copy: a drain may reset s.helper while this waits.
  if (auto h = s.helper; h && !h->status) {
    // Its monitor sends SIGTERM, then SIGKILL after kHelperStopWait; waited for, so that
    // the next attempt never starts a second driver beside one still running.
    h->run->cancel(api_.fs);
    const auto until = api_.clock.now() + 2 * kHelperStopWait + 1s;
    while (!h->status && api_.clock.now() < until) co_await h->ended.sleep_until(api_.clock, until);
  }
  s.helper.reset();
  std::string mp = s.config.mount_point;
  if (mounted_at(mp)) {
    auto unmount = [ops = &ops_, mp, lazy] { return ops->unmount(mp, lazy); };
    const std::string what = "unmounting " + mp;
    auto r = co_await api_.pool.run(what, config_.unmount_timeout, unmount);
    if (!r)
      log_->warn("{}: {}", s.config.name, r.error().message);
    else if (*r != 0 && *r != EINVAL)
      log_->warn("{}: unmounting {}: {}", s.config.name, mp, std::strerror(*r));
  }
  // A probe still blocked on the old mount keeps its thread; the new mount gets a fresh
  // flight. At most two are kept blocked per mount, so threads cannot pile up.
  std::erase_if(s.abandoned, [](const auto& f) { return !f->busy(); });
  if (s.flight->busy() && s.abandoned.size() < 2) {
    s.abandoned.push_back(std::move(s.flight));
    s.flight = std::make_unique<SingleFlight>(ex_);
  }
}

asio::awaitable<void> Mounts::check(Supervised& s) {
  const auto now = api_.clock.now();
  if (now < s.drained_until) {
    // Mounted again by an attempt that was under way when the drain came: flush and unmount.
    auto r = co_await unmount_cleanly(s);
    if (r.unmounted) set_state(s, MountState::drained, Reason::none, "unmounted for a stop or restart");
    co_return;
  }
  if (s.remount_asked) {
    s.remount_asked = false;
    set_state(s, MountState::unmounting, Reason::none, "remount asked for");
    co_await detach(s, true);
    s.remounts += 1;
    s.failures = 0;
    s.next_attempt = now;
  }
  const std::string& mp = s.config.mount_point;
  const auto entry = mounted_at(mp);
  s.attempt_due = !entry;
  if (!entry) {
    if (up(s.state) || s.state == MountState::stale || s.state == MountState::hung || s.state == MountState::drained) {
      set_state(s, MountState::unmounted, Reason::other,
                s.helper && s.helper->status
                    ? fmt::format("{} ended ({}): {}", s.identity ? s.identity->driver : "the driver",
                                  s.helper->status->describe(), last_lines(s.helper->output_tail()))
                    : fmt::format("{} is not mounted any more", mp));
      s.next_attempt = now;
      if (s.helper && !s.helper->status) co_await detach(s, true);
    }
    if (api_.clock.now() >= s.next_attempt) co_await attempt(s);
    co_return;
  }
  if (!s.identity) {
    // Mounted before this agent started (a restart): adopted if it is what was configured.
    auto secrets = read_secrets(s.config);
    auto plan = secrets ? plan_mount(s.config, config_, *secrets, tools(), secrets_dir_) : Result<MountPlan>(secrets.error());
    if (plan) s.identity = identity_of(std::move(*plan));
  }
  if (!s.identity || !matches(*s.identity, *entry)) {
    set_state(s, MountState::failed, Reason::other,
              fmt::format("{} already has a {} file system from '{}' mounted; the agent leaves it alone", mp,
                          escape_for_log(entry->fstype), escape_for_log(entry->source)));
    co_return;
  }
  const bool write = s.config.write_probe && !s.config.read_only;
  const auto started = std::chrono::steady_clock::now();
  auto probe = [ops = &ops_, mp, write] { return ops->probe(mp, write); };
  const std::string what = "probe of " + mp;
  auto r = co_await s.flight->run(what, config_.probe_timeout, probe);
  s.probed_at = api_.clock.wall_now();
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - started).count();
  // A hung probe counts with the time it was given up at.
  api_.state.metrics().observe("instanced_mount_probe_duration_seconds", "How long the mounts' health probes took",
                               {{"mount", s.config.name}}, ms / 1000.0, kLatencyBuckets);
  if (!r) {
    s.latency_ms.reset();
    set_state(s, MountState::hung, Reason::hung, r.error().message);
  } else if (r->error) {
    s.latency_ms = ms;
    std::string msg = fmt::format("{} {}: {}", r->step, mp, std::strerror(r->error));
    if (stale_errno(r->error))
      set_state(s, MountState::stale, Reason::stale, std::move(msg));
    else
      set_state(s, MountState::degraded, Reason::other, std::move(msg));
  } else {
    s.latency_ms = ms;
    if (ms > std::chrono::duration<double, std::milli>(config_.slow_probe).count())
      set_state(s, MountState::degraded, Reason::none, fmt::format("slow: the probe took {:.0f} ms", ms));
    else
      set_state(s, MountState::mounted, Reason::none, "");
  }
  if (s.state == MountState::stale || (s.state == MountState::hung && config_.on_hung == OnHung::remount)) {
    publish();
    co_await detach(s, true);
    s.remounts += 1;
    if (api_.clock.now() >= s.next_attempt) co_await attempt(s);
  }
}

asio::awaitable<void> Mounts::supervise(Supervised& s) {
  for (;;) {
    s.checking = true;
    try {
      co_await check(s);
    } catch (...) {
      s.checking = false;
      s.checked.pulse();
      throw;
    }
    s.checking = false;
    s.checked.pulse();
    publish();
    // The next probe; sooner when a mount attempt is due (never a busy loop: a hung or
    // foreign mount waits for the next probe).
    auto next = api_.clock.now() + config_.probe_interval;
    if (s.attempt_due && s.state != MountState::drained) next = std::min(next, std::max(s.next_attempt, api_.clock.now()));
    if (s.state == MountState::drained) next = std::min(next, std::max(s.drained_until, api_.clock.now()));
    if (s.remount_asked) next = api_.clock.now();
    co_await s.wake.sleep_until(api_.clock, next);
  }
}

asio::awaitable<Mounts::Unmounted> Mounts::unmount_cleanly(Supervised& s) {
  const std::string mp = s.config.mount_point;
  auto entry = mounted_at(mp);
  Unmounted out;
  if (!entry || !s.identity || !matches(*s.identity, *entry)) {  // not mounted, or not ours
    if (s.helper && !s.helper->status) s.helper->run->cancel(api_.fs);  // a mount under way
    s.helper.reset();
    out.note = "not mounted";
    co_return out;
  }
  set_state(s, MountState::unmounting, Reason::none, "");
  // Flush first, so notebooks written to the share are persisted.
  auto sync = [ops = &ops_, mp] { return ops->sync(mp); };
  const std::string syncing = "syncfs of " + mp;
  auto synced = co_await s.flight->run(syncing, config_.unmount_timeout, sync);
  if (!synced || *synced) {
    out.flushed = false;
    out.note = !synced ? synced.error().message : fmt::format("syncfs of {}: {}", mp, std::strerror(*synced));
  }
  auto unmount = [ops = &ops_, mp] { return ops->unmount(mp, false); };
  const std::string unmounting = "unmounting " + mp;
  auto r = co_await api_.pool.run(unmounting, config_.unmount_timeout, unmount);
  if (!r || *r) {
    std::string why = !r ? r.error().message
                         : (*r == EBUSY ? fmt::format("{} is busy (a process has files open or its working directory inside)", mp)
                                        : fmt::format("umount {}: {}", mp, std::strerror(*r)));
    out.unmounted = false;
    out.note = out.note.empty() ? why : out.note + "; " + why;
    set_state(s, MountState::failed, Reason::busy, fmt::format("left mounted: {}", out.note));
    co_return out;
  }
  if (out.note.empty()) out.note = "flushed and unmounted";
  // A FUSE server ends by itself once unmounted, after the uploads under way: it is given
  // unmount_timeout for them.
  const auto until = api_.clock.now() + config_.unmount_timeout;
  while (s.helper && !s.helper->status && api_.clock.now() < until) {
    auto h = s.helper;  // a copy: the wait must outlive a reset of s.helper
    co_await h->ended.sleep_until(api_.clock, until);
  }
  if (s.helper && !s.helper->status) {
    out.note += fmt::format("; {} had not ended after {}: stopped", s.identity->driver, format_duration(config_.unmount_timeout));
    s.helper->run->cancel(api_.fs);
  }
  s.helper.reset();
  set_state(s, MountState::unmounted, out.flushed ? Reason::none : Reason::other, out.note);
  co_return out;
}

asio::awaitable<Result<std::string>> Mounts::drain(std::string action) {
  const auto until = api_.clock.now() + config_.drain_hold;
  for (auto& s : mounts_) s->drained_until = until;  // no new attempt from here on
  std::vector<std::string> done, unflushed;
  for (auto& s : mounts_) {
    // An attempt or probe under way ends first (each is bounded by its timeout).
    const auto limit = api_.clock.now() + config_.mount_timeout + config_.probe_timeout;
    while (s->checking && api_.clock.now() < limit) co_await s->checked.sleep_until(api_.clock, limit);
    auto r = co_await unmount_cleanly(*s);
    done.push_back(fmt::format("{}: {}", s->config.name, r.note));
    if (!r.flushed) unflushed.push_back(fmt::format("{}: {}", s->config.name, r.note));
    if (r.unmounted) set_state(*s, MountState::drained, Reason::none, fmt::format("unmounted for {}", action));
    s->wake.pulse();
  }
  publish();
  // Files that may not have reached the share refuse the stop; a mount that is only busy
  // is reported (the stop unmounts it anyway, after the flush).
  if (!unflushed.empty())
    co_return Error{fmt::format("{} refused: not flushed: {}", action, fmt::join(unflushed, "; "))};
  if (done.empty()) co_return std::string("no mounts");
  co_return fmt::format("{}", fmt::join(done, "; "));
}

Result<void> Mounts::remount(const std::string& name) {
  for (auto& s : mounts_)
    if (s->config.name == name) {
      s->remount_asked = true;
      s->drained_until = {};
      s->wake.pulse();
      return {};
    }
  return Error{fmt::format("no mount named '{}'", name)};
}

asio::awaitable<void> Mounts::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  // Shared with the supervisors' completions, which may come after this frame is gone.
  auto all_done = std::make_shared<Wake>(ex_);
  for (auto& s : mounts_) co_await take_back_driver(*s);
  for (auto& s : mounts_) {
    Supervised* p = s.get();
    asio::co_spawn(ex_, supervise(*p),
                   asio::bind_cancellation_slot(p->cancel.slot(), [this, p, all_done](std::exception_ptr e) {
                     p->done = true;
                     if (e && !is_cancellation(e)) log_->error("{}: {}", p->config.name, describe(e));
                     all_done->pulse();
                   }));
  }
  asio::steady_timer forever(ex_, asio::steady_timer::time_point::max());
  boost::system::error_code ec;
  co_await forever.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  // Stopping: the supervisors end, then every mount is flushed and unmounted (each step
  // bounded by its own timeout), whatever else the daemon asks meanwhile.
  co_await asio::this_coro::reset_cancellation_state(ignore_cancellation);
  stopping_ = true;
  for (auto& s : mounts_) s->cancel.emit(asio::cancellation_type::terminal);
  for (;;) {
    bool pending = false;
    for (auto& s : mounts_) pending = pending || !s->done;
    if (!pending) break;
    co_await all_done->wait();
  }
  if (!config_.unmount_on_stop) co_return;
  for (auto& s : mounts_) {
    auto r = co_await unmount_cleanly(*s);
    if (!r.flushed || !r.unmounted) log_->warn("{}: {}", s->config.name, r.note);
  }
  publish();
}

json::object Mounts::mount_json(const Supervised& s) const {
  const MountConfig& m = s.config;
  json::object o;
  o["name"] = m.name;
  o["type"] = std::string(EnumNames<MountType>::names[static_cast<std::size_t>(m.type)]);
  o["mount_point"] = m.mount_point;
  o["required"] = m.required;
  o["state"] = std::string(to_string(s.state));
  if (s.since != Clock::wall_time{}) o["since"] = iso8601(s.since);
  if (s.identity) {
    o["driver"] = s.identity->driver;
    o["source"] = s.identity->source;
  }
  o["account"] = m.account;
  if (!m.share.empty()) o["share"] = m.share;
  if (!m.container.empty()) o["container"] = m.container;
  if (s.reason != Reason::none) o["reason"] = std::string(to_string(s.reason));
  if (!s.error.empty()) o["error"] = s.error;
  json::object probe;
  if (s.probed_at != Clock::wall_time{}) probe["at"] = iso8601(s.probed_at);
  if (s.latency_ms) probe["latency_ms"] = std::round(*s.latency_ms * 10) / 10;
  if (s.flight->busy()) probe["blocked_for_s"] = std::chrono::duration<double>(s.flight->busy_for()).count();
  o["probe"] = std::move(probe);
  o["attempts"] = s.attempts;
  o["remounts"] = s.remounts;
  if (!up(s.state) && s.next_attempt > api_.clock.now())
    o["next_attempt_in_s"] = std::chrono::duration<double>(s.next_attempt - api_.clock.now()).count();
  std::size_t blocked = s.flight->busy() ? 1 : 0;
  for (const auto& f : s.abandoned) blocked += f->busy() ? 1 : 0;
  o["blocked_threads"] = blocked;
  return o;
}

json::object Mounts::status_json() const {
  json::array list;
  for (const auto& s : mounts_) list.push_back(mount_json(*s));
  json::object o;
  o["ready"] = ready_.is_open();
  o["mounts"] = std::move(list);
  o["probe_interval_s"] = std::chrono::duration<double>(config_.probe_interval).count();
  return o;
}

void Mounts::publish() {
  std::size_t required_up = 0, required = 0, problems = 0, started = 0;
  std::vector<std::string> bad;
  for (const auto& s : mounts_) {
    const bool ok = up(s->state);
    if (s->state != MountState::pending && s->state != MountState::mounting) ++started;
    if (s->config.required) {
      ++required;
      if (ok) ++required_up;
    }
    if (!ok || s->state == MountState::degraded) {
      ++problems;
      bad.push_back(fmt::format("{} {}", s->config.name, to_string(s->state)));
    }
    Labels l{{"mount", s->config.name}};
    auto& metrics = api_.state.metrics();
    metrics.set_gauge("instanced_mount_up", "1 while the mount is mounted and answers its probe", l, ok ? 1 : 0);
    if (s->latency_ms)
      metrics.set_gauge("instanced_mount_probe_seconds", "Latency of the last health probe", l, *s->latency_ms / 1000.0);
    metrics.set_counter("instanced_mount_remounts_total", "Remounts since the agent started", l, static_cast<double>(s->remounts));
  }
  if (required_up == required && !stopping_) {
    if (!ready_.is_open()) ready_.open();
  } else if (ready_.is_open()) {
    ready_.close();
  }
  Health h = Health::ok;
  std::string summary = mounts_.empty() ? "no mounts configured" : fmt::format("{} of {} mounted", mounts_.size() - problems, mounts_.size());
  if (!bad.empty()) summary += fmt::format(" ({})", fmt::join(bad, ", "));
  bool required_down = required_up < required;
  bool all_tried = started == mounts_.size();
  bool any_drained = false;
  for (const auto& s : mounts_) any_drained = any_drained || s->state == MountState::drained;
  if (required_down && !any_drained)
    h = all_tried ? Health::failed : Health::starting;
  else if (problems > 0)
    h = Health::degraded;
  api_.state.publish("mounts", h, summary, status_json());
}

void Mounts::add_routes(status::Router& router) {
  using S = status::http::status;
  router.add(status::http::verb::get, "/v1/mounts", [this](const status::Request&) {
    return status::json_response(S::ok, json::serialize(status_json()));
  });
  router.add(status::http::verb::post, "/v1/mounts/remount", [this](const status::Request& req) {
    auto name = status::query_param(req, "name");
    if (!name) return status::error_response(S::bad_request, "name: missing (?name=MOUNT)");
    auto r = remount(*name);
    if (!r) return status::error_response(S::not_found, r.error().message);
    return status::json_response(S::accepted, R"({"remount":"started"})");
  });
}

}  // namespace instanced::mounts
