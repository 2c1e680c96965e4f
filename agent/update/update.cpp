#include "agent/update/update.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <unistd.h>

#include "agent/control/protocol.hpp"
#include "agent/update/download.hpp"
#include "agent/update/signature.hpp"
#include "common/build_info.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"
#include "common/fs.hpp"

namespace instanced::update {
namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace json = boost::json;
using control::CommandResult;
using control::Status;

namespace {

constexpr std::size_t kMaxRecord = 1 << 20;
constexpr auto kFileTimeout = std::chrono::seconds(30);
constexpr auto kToolTimeout = std::chrono::minutes(1);
constexpr int kMaxLaunches = 3;
// The installer runs two dpkg -i at most besides the wait for the new agent.
constexpr auto kInstallerSlack = std::chrono::hours(1);

std::string trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  return std::string(s);
}

bool in_progress(const std::string& state) { return state == "installing" || state == "rolling_back"; }

std::string str(const json::object& o, std::string_view key) {
  const auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// A package version the agent reports as its own: a digit first, then [A-Za-z0-9.+~]. No
// Debian revision ("-1") or epoch ("1:"): the new agent's version must be the package's
// for it to confirm itself.
bool agent_version(std::string_view v) {
  if (v.empty() || v.size() > 64 || !std::isdigit(static_cast<unsigned char>(v.front()))) return false;
  for (char c : v)
    if (!std::isalnum(static_cast<unsigned char>(c)) && std::string_view(".+~").find(c) == std::string_view::npos)
      return false;
  return true;
}

std::string lower_hex(std::string_view s) {
  if (s.size() != 64) return {};
  std::string out;
  for (char c : s) {
    if (!std::isxdigit(static_cast<unsigned char>(c))) return {};
    out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  }
  return out;
}

// "Package: instanced\nVersion: 1.2\n" (dpkg-deb --field FILE Package Version): the two values.
std::pair<std::string, std::string> package_and_version(std::string_view fields) {
  std::pair<std::string, std::string> out;
  while (!fields.empty()) {
    auto eol = fields.find('\n');
    std::string_view line = fields.substr(0, eol);
    if (line.starts_with("Package: ")) out.first = line.substr(9);
    if (line.starts_with("Version: ")) out.second = line.substr(9);
    if (eol == std::string_view::npos) break;
    fields.remove_prefix(eol + 1);
  }
  return out;
}

// Takes `dir`/lock (the installer's flock(1) takes the same) and writes `confirmed` if the
// state is still `installing` and the time is not up: whether it did.
// The installer holds the lock from its deadline through a rollback's dpkg: then this does
// not wait (false), and the state says what happened.
Result<bool> confirm_under_lock(const fs::path& dir, Clock::wall_time by) {
  auto installing = [&dir, by] {
    auto state = read_regular_file(dir / "state", 256);
    return state && state->substr(0, state->find('\n')) == "installing" && std::chrono::system_clock::now() < by;
  };
  if (!installing()) return false;
  Fd lock(::open((dir / "lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
  if (!lock) return Error{fmt::format("{}: cannot open: {}", (dir / "lock").string(), std::strerror(errno))};
  if (::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return false;
    return Error{fmt::format("{}: cannot lock: {}", (dir / "lock").string(), std::strerror(errno))};
  }
  if (!installing()) return false;
  RealFilesystem files;
  if (auto w = files.write_file_atomic(dir / "state", "confirmed\n", 0600); !w) return w.error();
  return true;
}

// A new attempt from this agent to `to`: its id, versions, the URL without its query.
Attempt begun(const std::string& to, const Url& url, const std::string& sha256, Clock& clock) {
  Attempt a;
  a.id = control::new_id();
  a.from = build_version();
  a.to = to;
  a.url = url.shown();
  a.sha256 = sha256;
  a.started = iso8601(clock.wall_now());
  return a;
}

}  // namespace

std::string default_installer() {
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  if (ec) return "/usr/lib/instanced/instanced-update";
  return (self.parent_path().parent_path() / "lib/instanced/instanced-update").string();
}

json::object Attempt::to_json() const {
  json::object base;
  for (const auto& [name, h] : baseline) base[name] = h;
  return {{"id", id},           {"from", from},         {"to", to},           {"url", url},
          {"sha256", sha256},   {"started", started},   {"confirm_by", confirm_by},
          {"baseline", base},   {"reported", reported}, {"launches", launches}, {"state", state},
          {"reason", reason}};
}

Update::Update(asio::any_io_executor ex, Api& api, ProcessRunner& runner, monitor::Launcher launcher,
               const UpdateConfig& config, const ProxyConfig& proxy, std::string state_dir,
               const status::AgentInfo& info, Refusal refusal)
    : ex_(ex), api_(api), runner_(runner), launcher_(std::move(launcher)), config_(config), proxy_(proxy),
      state_dir_(std::move(state_dir)), info_(info), refusal_(std::move(refusal)), log_(api.logging.get("update")),
      launched_(ex) {
  if (config_.installer.empty()) config_.installer = default_installer();
}

fs::path Update::dir() const { return fs::path(state_dir_) / "update"; }

void Update::reconfigure(const UpdateConfig& config, const ProxyConfig& proxy) {
  config_ = config;
  if (config_.installer.empty()) config_.installer = default_installer();
  proxy_ = proxy;
}

asio::awaitable<void> Update::run() {
  load();
  publish();
  if (attempt_ && in_progress(attempt_->state)) {
    co_await take_back();
  } else if (attempt_ && !attempt_->reported) {
    report();
  }
  for (;;) {
    while (!run_) co_await launched_.wait();
    co_await follow();
  }
}

// update.json with the installer's `state` and `reason` beside it.
void Update::load() {
  auto text = api_.fs.read_file(dir() / "update.json", kMaxRecord);
  if (!text) return;
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  if (ec || !v.is_object()) {
    log_->warn("{}: not an update record; ignored", (dir() / "update.json").string());
    return;
  }
  const auto& o = v.as_object();
  Attempt a;
  a.id = str(o, "id");
  a.from = str(o, "from");
  a.to = str(o, "to");
  a.url = str(o, "url");
  a.sha256 = str(o, "sha256");
  a.started = str(o, "started");
  a.confirm_by = str(o, "confirm_by");
  if (const auto* b = o.if_contains("baseline"); b && b->is_object())
    for (const auto& [name, h] : b->as_object())
      if (h.is_int64()) a.baseline[std::string(name)] = static_cast<int>(h.as_int64());
  if (const auto* r = o.if_contains("reported"); r && r->is_bool()) a.reported = r->as_bool();
  if (const auto* n = o.if_contains("launches"); n && n->is_int64()) a.launches = static_cast<int>(n->as_int64());
  auto state = api_.fs.read_file(dir() / "state", 256);
  a.state = state ? state->substr(0, state->find('\n')) : str(o, "state");
  auto reason = api_.fs.read_file(dir() / "reason", 16 << 10);
  a.reason = reason ? trimmed(*reason) : str(o, "reason");
  attempt_ = std::move(a);
}

Result<void> Update::save() {
  if (auto r = api_.fs.create_directories(dir(), 0700); !r) return r;
  if (auto r = api_.fs.write_file_atomic(dir() / "state", attempt_->state + "\n", 0600); !r) return r;
  if (auto r = api_.fs.write_file_atomic(dir() / "reason", attempt_->reason + "\n", 0600); !r) return r;
  return api_.fs.write_file_atomic(dir() / "update.json", json::serialize(attempt_->to_json()), 0600);
}

void Update::publish() {
  std::string summary = "no update attempted";
  if (attempt_ && in_progress(attempt_->state))
    summary = fmt::format("updating from {} to {}: {}", attempt_->from, attempt_->to, attempt_->state);
  else if (attempt_)
    summary = fmt::format("last update, from {} to {}: {}{}{}", attempt_->from, attempt_->to, attempt_->state,
                          attempt_->reason.empty() ? "" : ": ", attempt_->reason);
  api_.state.publish("update", Health::ok, std::move(summary), status_json());
}

json::object Update::status_json() const {
  json::object o;
  o["attempt"] = attempt_ ? json::value(attempt_->to_json()) : json::value(nullptr);
  o["installer_running"] = run_.has_value();
  o["public_keys"] = config_.public_keys.size();
  return o;
}

// ---- the command ----

Result<Update::Request> Update::parse(const json::object& args) const {
  Request r;
  r.version = str(args, "version");
  if (!agent_version(r.version))
    return Error{"args.version: an agent version is required (a digit first, then letters, digits and .+~; at most 64)"};
  const std::string url = str(args, "url");
  if (url.empty() || url.size() > 8192) return Error{"args.url: an https:// URL of at most 8192 characters is required"};
  auto parsed = parse_url(url);
  if (!parsed) return Error{"args.url: not an https:// URL (it is not repeated: it may hold a signature)"};
  if (parsed->scheme != "https") return Error{"args.url: https:// is required"};
  r.url = std::move(*parsed);
  r.sha256 = lower_hex(str(args, "sha256"));
  if (r.sha256.empty()) return Error{"args.sha256: 64 hexadecimal digits are required"};
  r.signature = str(args, "signature");
  if (r.signature.empty() || r.signature.size() > 256) return Error{"args.signature: base64 of an Ed25519 signature is required"};
  return r;
}

std::optional<std::string> Update::refused(const Request& r) const {
  if (config_.public_keys.empty()) return "update.public_keys is empty on this instance: it takes no update";
  if (r.version == build_version()) return fmt::format("this agent already runs {}", r.version);
  if (auto v = verify(signed_text(r.version, r.sha256), r.signature, config_.public_keys); !v) return v.error().message;
  if (auto why = refusal_ ? refusal_() : std::nullopt) return why;
  return std::nullopt;
}

void Update::refuse(const Request& r, std::string why, std::string state) {
  log_->warn("update_agent to {} {}: {}", r.version, state, why);
  Attempt a = begun(r.version, r.url, r.sha256, api_.clock);
  a.reported = true;  // the command's answer says it
  a.state = std::move(state);
  a.reason = std::move(why);
  attempt_ = std::move(a);
  if (auto s = save(); !s) log_->warn("cannot record the refused update: {}", s.error().message);
  publish();
}

asio::awaitable<CommandResult> Update::start(json::object args) {
  if (busy_ || run_ || (attempt_ && in_progress(attempt_->state)))
    co_return CommandResult{Status::refused, {}, "an update is in progress; one at a time (instancectl update status)"};
  auto req = parse(args);
  if (!req) co_return CommandResult{Status::invalid, {}, req.error().message};
  if (auto why = refused(*req)) {
    refuse(*req, *why);
    co_return CommandResult{Status::refused, {}, *why};
  }
  busy_ = true;
  struct Release {
    bool& busy;
    ~Release() { busy = false; }
  } release{busy_};
  std::string refusal;
  auto fetching = fetch_and_check(*req, refusal);
  auto fetched = co_await std::move(fetching);
  if (!refusal.empty() || !fetched) {
    const std::string why = refusal.empty() ? fetched.error().message : refusal;
    refuse(*req, why, refusal.empty() ? "failed" : "refused");
    co_return CommandResult{refusal.empty() ? Status::failed : Status::refused, {}, why};
  }
  Attempt a = begun(req->version, req->url, req->sha256, api_.clock);
  for (const auto& [name, s] : api_.state.subsystems()) a.baseline[name] = static_cast<int>(s.health);
  a.state = "installing";
  attempt_ = std::move(a);
  auto launching = launch();
  auto launched = co_await std::move(launching);
  if (!launched) {
    attempt_->state = "failed";
    attempt_->reason = "nothing was installed: " + launched.error().message;
    attempt_->reported = true;
    (void)save();
    publish();
    co_return CommandResult{Status::failed, {}, attempt_->reason};
  }
  api_.state.emit("update", "update_started", fmt::format("updating the agent from {} to {}", attempt_->from, attempt_->to),
                  {{"id", attempt_->id}, {"from", attempt_->from}, {"to", attempt_->to}, {"confirm_by", attempt_->confirm_by}});
  co_return CommandResult{Status::ok,
                          {{"id", attempt_->id},
                           {"from", attempt_->from},
                           {"to", attempt_->to},
                           {"state", attempt_->state},
                           {"confirm_by", attempt_->confirm_by}},
                          {}};
}

// The download into state_dir/update/new.deb, checked: its SHA-256, that it fits, that it is
// the instanced package of the version asked for. `refusal`: why it is refused; an error:
// it could not be done.
asio::awaitable<Result<void>> Update::fetch_and_check(const Request& r, std::string& refusal) {
  if (auto d = api_.fs.create_directories(dir(), 0700); !d) co_return d.error();
  const fs::path part = dir() / "new.deb.part", file = dir() / "new.deb";
  std::error_code ec;
  for (const char* stale : {"new.deb", "previous.deb", "waiting_for"}) fs::remove(dir() / stale, ec);
  // Free space, read off the loop (before the download, and again with its real size).
  auto room = [this]() -> asio::awaitable<Result<FsUsage>> {
    Filesystem& files = api_.fs;
    auto read = [&files, d = dir()] { return files.usage(d); };
    co_return co_await api_.pool.run("reading the free space for the update", kFileTimeout, read);
  };
  // `copies` of the package still to be written (3 before the download, 2 after it).
  auto fits = [this](const Result<FsUsage>& usage, std::uint64_t bytes, std::uint64_t copies) -> Result<void> {
    if (!usage) return usage.error();
    const std::uint64_t need = copies * bytes + config_.keep_free.bytes;
    if (usage->avail_bytes < need)
      return Error{fmt::format("the update would not fit: {} free on {}'s file system, {} needed (the package 3 times "
                               "over, and update.keep_free)",
                               format_size(ByteSize{usage->avail_bytes}), dir().string(), format_size(ByteSize{need}))};
    return {};
  };
  const auto before = co_await room();
  Fetch f{r.url, part, config_.max_bytes.bytes, config_.download_timeout, config_.ca_file, proxy_,
          [&fits, &before, max = config_.max_bytes.bytes](std::optional<std::uint64_t> length) {
            return fits(before, length.value_or(max), 3);
          }};
  log_->info("update_agent: downloading {} from {}", r.version, fmt::format("{}://{}", r.url.scheme, r.url.authority()));
  auto fetching = fetch(std::move(f));
  auto got = co_await std::move(fetching);
  if (auto* e = std::get_if<FetchError>(&got)) {
    if (e->refused) refusal = e->message;
    co_return Error{e->message};
  }
  const auto& done = std::get<Fetched>(got);
  auto drop = [&part] {
    std::error_code ignored;
    fs::remove(part, ignored);
  };
  if (done.sha256 != r.sha256) {
    drop();
    refusal = fmt::format("sha256: the downloaded package's is {}, not {}", done.sha256, r.sha256);
    co_return Result<void>{};
  }
  const auto after = co_await room();
  if (auto fit = fits(after, done.bytes, 2); !fit) {
    drop();
    refusal = fit.error().message;
    co_return Result<void>{};
  }
  SpawnSpec spec;
  spec.argv = {"/usr/bin/dpkg-deb", "--field", part.string(), "Package", "Version"};
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C"};
  auto fields = co_await run_command(runner_, api_.clock, spec, kToolTimeout);
  if (!fields || !fields->status.success()) {
    drop();
    refusal = fmt::format("not a Debian package: dpkg-deb: {}",
                          fields ? fields->last_line() : fields.error().message);
    co_return Result<void>{};
  }
  const auto [package, version] = package_and_version(fields->output);
  if (package != "instanced" || version != r.version) {
    drop();
    refusal = fmt::format("the package is {} {}, not instanced {}", escape_for_log(package), escape_for_log(version), r.version);
    co_return Result<void>{};
  }
  // On disk before the installer reads it (off the loop: up to max_bytes to write back).
  auto sync = [part, file]() -> Result<void> {
    Fd fd(::open(part.c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd || ::fsync(fd.get()) != 0) return Error{fmt::format("{}: fsync: {}", part.string(), std::strerror(errno))};
    std::error_code renamed;
    fs::rename(part, file, renamed);
    if (renamed) return Error{fmt::format("{}: {}", file.string(), renamed.message())};
    return {};
  };
  co_return co_await api_.pool.run("writing the package to disk", config_.download_timeout, sync);
}

// The installer as a monitored workload: a transient unit of its own under systemd.
asio::awaitable<Result<void>> Update::launch() {
  const auto by = api_.clock.wall_now() + config_.confirm_within;
  attempt_->confirm_by = iso8601(by);
  ++attempt_->launches;
  if (auto s = save(); !s) co_return s.error();
  monitor::WorkloadSpec w;
  w.name = "the installer of " + attempt_->to;
  const auto epoch = std::chrono::duration_cast<std::chrono::seconds>(by.time_since_epoch()).count();
  w.spawn.argv = {config_.installer, dir().string(), attempt_->to, std::to_string(epoch)};
  w.spawn.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8", "DEBIAN_FRONTEND=noninteractive"};
  w.timeout = config_.confirm_within + kInstallerSlack;
  w.started = api_.clock.wall_now();
  w.log_file = (dir() / "installer.log").string();
  w.max_log_bytes = 1 << 20;
  w.tail_lines = 20;
  w.journal = api_.logging.journald();
  w.journal_identifier = "instanced-update";
  const std::string unit = fmt::format("instanced-update-{}-{}.service", attempt_->id.substr(0, 8), attempt_->launches);
  auto launching = monitor::Run::launch(runner_, api_.fs, api_.clock, launcher_, dir() / "run", unit, std::move(w));
  auto launched = co_await std::move(launching);
  if (!launched) co_return launched.error();
  log_->info("update: the installer runs ({}); the new agent has until {}", unit, attempt_->confirm_by);
  run_ = std::move(*launched);
  launched_.pulse();
  publish();
  co_return Result<void>{};
}

// ---- after a restart, and while the installer runs ----

// An attempt left in progress: its installer still runs (followed), or it ended without a
// verdict (a reboot): started again, with the whole time again.
asio::awaitable<void> Update::take_back() {
  const fs::path run_dir = dir() / "run";
  auto look = [this, run_dir] { return monitor::Run::find(api_.fs, run_dir); };
  auto found = co_await api_.pool.run("reading the installer's run folder", kFileTimeout, look);
  // Not known whether it runs: never a second installer beside it; looked at again.
  while (!found) {
    log_->warn("update to {}: {}; looking again in 10s", attempt_->to, found.error().message);
    co_await api_.clock.sleep_for(std::chrono::seconds(10));
    found = co_await api_.pool.run("reading the installer's run folder", kFileTimeout, look);
  }
  if (auto* run = std::get_if<monitor::Run>(&*found)) {
    log_->info("update to {}: the installer still runs (pid {}); taken back", attempt_->to, run->pid());
    run_ = std::move(*run);
    publish();
    co_return;
  }
  if (attempt_->launches >= kMaxLaunches) {
    attempt_->state = "failed";
    attempt_->reason = fmt::format("the installer ended {} times without a verdict", attempt_->launches);
    report();
    co_return;
  }
  log_->warn("update to {}: the installer ended without a verdict ({}); started again", attempt_->to, attempt_->state);
  auto launching = launch();
  if (auto launched = co_await std::move(launching); !launched) {
    attempt_->state = "failed";
    attempt_->reason = "cannot start the installer again: " + launched.error().message;
    report();
  }
}

// Until the installer ends; meanwhile, if this agent is the new version, it confirms
// itself once it is READY, connected and no less healthy than the old one was.
asio::awaitable<void> Update::follow() {
  using namespace asio::experimental::awaitable_operators;
  auto ending = run_->ended(ex_, api_.clock, api_.fs);
  if (attempt_->to == build_version()) {
    auto confirming = confirm_until_ended();
    co_await (std::move(ending) || std::move(confirming));
  } else {
    co_await std::move(ending);
  }
  auto exit = run_->exit_record(api_.fs);
  run_.reset();
  const int launches = attempt_->launches;
  const bool reported = attempt_->reported;
  load();
  attempt_->launches = launches;
  attempt_->reported = reported;
  if (in_progress(attempt_->state)) {
    log_->warn("update to {}: the installer ended ({}) with the update {}", attempt_->to,
               exit ? exit->status.describe() : exit.error().message, attempt_->state);
    co_await take_back();
    co_return;
  }
  report();
}

// Every second while the installer runs (ended by it): confirms once healthy.
asio::awaitable<void> Update::confirm_until_ended() {
  for (;;) {
    if (attempt_->state == "installing") co_await confirm_if_healthy();
    co_await api_.clock.sleep_for(std::chrono::seconds(1));
  }
}

std::vector<std::string> Update::waiting_for() const {
  std::vector<std::string> w;
  if (info_.phase != "running") w.push_back(fmt::format("the agent is {}, not READY", info_.phase));
  for (const auto& [name, s] : api_.state.subsystems()) {
    if (name == "update") continue;
    auto before = attempt_->baseline.find(name);
    const int was = before == attempt_->baseline.end() ? 0 : before->second;
    if (static_cast<int>(s.health) > was || (name == "control" && s.health != Health::ok))
      w.push_back(fmt::format("{}: {} ({})", name, s.summary, to_string(s.health)));
  }
  return w;
}

asio::awaitable<void> Update::confirm_if_healthy() {
  const auto waiting = waiting_for();
  if (!waiting.empty()) {
    const std::string text = fmt::format("{}\n", fmt::join(waiting, "; "));
    if (text != said_waiting_ && api_.fs.write_file_atomic(dir() / "waiting_for", text, 0600, false)) said_waiting_ = text;
    co_return;
  }
  const auto by = parse_iso8601(attempt_->confirm_by).value_or(api_.clock.wall_now());
  auto confirm = [d = dir(), by] { return confirm_under_lock(d, by); };
  auto confirmed = co_await api_.pool.run("confirming the update", kFileTimeout, confirm);
  if (!confirmed) {
    log_->warn("update to {}: cannot confirm it: {}", attempt_->to, confirmed.error().message);
    co_return;
  }
  if (!*confirmed) {
    load();  // the time was up: the installer is rolling back
    co_return;
  }
  attempt_->state = "confirmed";
  log_->info("update to {}: READY, connected and healthy; confirmed", attempt_->to);
  publish();
}

// The outcome as an event, once.
void Update::report() {
  if (attempt_->reported) return;
  attempt_->reported = true;
  json::object data{{"id", attempt_->id}, {"from", attempt_->from}, {"to", attempt_->to}, {"state", attempt_->state}};
  if (attempt_->state == "confirmed") {
    api_.state.emit("update", "update_succeeded", fmt::format("the agent was updated from {} to {}", attempt_->from, attempt_->to),
                    std::move(data));
  } else {
    data["reason"] = attempt_->reason;
    api_.state.emit("update", "update_failed",
                    fmt::format("the update from {} to {} failed ({}): {}", attempt_->from, attempt_->to, attempt_->state,
                                attempt_->reason),
                    std::move(data));
  }
  log_->info("update to {}: {}{}{}", attempt_->to, attempt_->state, attempt_->reason.empty() ? "" : ": ", attempt_->reason);
  if (auto s = save(); !s) log_->warn("cannot record the update's outcome: {}", s.error().message);
  publish();
}

// ---- routes and commands ----

void Update::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/update", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
}

void Update::add_commands(control::CommandRegistry& commands) {
  // A reboot while the installer runs could leave the new package unjudged (docs/update.md).
  commands.add_veto("update", [this](std::string_view action) -> std::optional<std::string> {
    if (!busy_ && !run_ && !(attempt_ && in_progress(attempt_->state))) return std::nullopt;
    return fmt::format("update: {} refused: the agent is being updated ({})", action,
                       attempt_ ? fmt::format("to {}, {}", attempt_->to, attempt_->state) : std::string("downloading"));
  });
  commands.add("update_agent", [this](const json::object& args) -> asio::awaitable<CommandResult> {
    auto starting = start(args);
    co_return co_await std::move(starting);
  });
}

}  // namespace instanced::update
