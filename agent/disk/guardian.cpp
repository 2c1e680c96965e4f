#include "agent/disk/guardian.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <fmt/format.h>
#include <future>
#include <unistd.h>

#include "common/message_ids.hpp"

namespace instanced::disk {
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace std::chrono_literals;

namespace {

constexpr auto kStatTimeout = 5s;
constexpr auto kCommandTimeout = std::chrono::minutes(10);  // a reclaim CLI (conda, podman)
constexpr std::size_t kReportListed = 20;  // deletions shown in /v1/disk; all in the report file

json::object usage_json(const FsUsage& u) {
  return {{"total_bytes", u.total_bytes},   {"used_bytes", u.total_bytes - u.free_bytes},
          {"avail_bytes", u.avail_bytes},   {"total_inodes", u.total_inodes},
          {"avail_inodes", u.avail_inodes}, {"used_inodes", u.total_inodes - u.free_inodes}};
}

json::array entries_json(const std::vector<ScanEntry>& v) {
  json::array a;
  for (const auto& e : v) a.push_back(json::object{{"path", e.path}, {"bytes", e.bytes}, {"apparent_bytes", e.apparent}});
  return a;
}

json::object report_json(const RuleReport& r, std::size_t listed) {
  json::array deleted;
  for (std::size_t i = 0; i < r.deleted.size() && i < listed; ++i)
    deleted.push_back(json::object{{"path", r.deleted[i].path}, {"bytes", r.deleted[i].bytes}});
  json::array cmds;
  for (const auto& c : r.commands) cmds.emplace_back(c);
  return {{"rule", r.rule}, {"ran", r.ran},   {"dry_run", r.dry_run}, {"files", r.files}, {"bytes", r.bytes},
          {"errors", r.errors}, {"note", r.note}, {"commands", std::move(cmds)}, {"deleted", std::move(deleted)}};
}

// Reads a command's output (up to 1 MiB kept) and waits for its exit; the outcome goes to
// `done` (a thread waits on it). Parameters by value: they live in the coroutine frame.
asio::awaitable<void> collect(std::shared_ptr<Process> proc,
                              std::shared_ptr<std::promise<Result<std::pair<int, std::string>>>> done) {
  std::string out;
  std::vector<char> buf(16384);
  try {
    for (;;) {
      std::size_t n = co_await proc->read_output(std::span<char>(buf));
      if (n == 0) break;
      if (out.size() < (1 << 20)) out.append(buf.data(), n);
    }
  } catch (const boost::system::system_error&) {
  }
  ExitStatus st = co_await proc->wait();
  done->set_value(std::make_pair(st.signal ? 128 + st.signal : st.code, std::move(out)));
}

}  // namespace

// A scan or a reclaim, on a thread of its own; the result is handed back on the loop.
struct Guardian::Job {
  std::string why;
  Clock::wall_time started{};
  Clock::steady_time started_steady{};
  ScanProgress progress;
  std::thread thread;
  // Results, written by the thread before it posts the completion.
  ScanResult scan;
  std::vector<RuleReport> reports;
  std::vector<std::int64_t> measured;  // avail bytes gained on `/` per rule (command rules)
  bool dry_run = false;

  ~Job() {
    progress.cancel = true;
    if (thread.joinable()) thread.join();
  }
};

Guardian::Guardian(asio::any_io_executor ex, Api& api, ProcessRunner& runner, const DiskConfig& config, std::string state_dir)
    : ex_(ex),
      api_(api),
      runner_(runner),
      config_(config),
      state_dir_(std::move(state_dir)),
      log_(api.logging.get("disk")),
      work_gate_(ex, "disk") {
  for (const auto& p : config_.paths) {
    PathState s;
    s.config = p;
    s.hysteresis.set(config_.margin.bytes, config_.hold);
    s.since = api_.clock.wall_now();
    paths_.push_back(std::move(s));
  }
  work_gate_.open();
  load_cached_scan();
}

Guardian::~Guardian() = default;

void Guardian::reconfigure(const DiskConfig& config) {
  config_ = config;
  std::vector<PathState> next;
  for (const auto& p : config_.paths) {
    auto it = std::find_if(paths_.begin(), paths_.end(), [&](const PathState& s) { return s.config.path == p.path; });
    PathState s = it != paths_.end() ? std::move(*it) : PathState{};
    if (it == paths_.end()) s.since = api_.clock.wall_now();
    s.config = p;
    s.hysteresis.set(config_.margin.bytes, config_.hold);
    next.push_back(std::move(s));
  }
  paths_ = std::move(next);
}

asio::awaitable<void> Guardian::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  for (;;) {
    co_await sample();
    publish();
    // A Clock sleep: tests drive the interval with a simulated clock.
    co_await api_.clock.sleep_for(config_.interval);
  }
}

asio::awaitable<void> Guardian::sample() {
  for (std::size_t i = 0; i < paths_.size(); ++i) {
    const std::string path = paths_[i].config.path;
    Filesystem& fs = api_.fs;
    // A path that does not exist (no temp disk on this VM size) is `absent`, not an error.
    auto statvfs = [&fs, path]() -> Result<std::optional<FsUsage>> {
      auto u = fs.usage(path);
      if (!u && u.error().kind == ErrorKind::not_found) return std::optional<FsUsage>();
      if (!u) return u.error();
      return std::optional<FsUsage>(*u);
    };
    const std::string what = "statvfs " + path;
    auto got = co_await api_.pool.run(what, kStatTimeout, statvfs);
    if (i >= paths_.size() || paths_[i].config.path != path) break;  // reconfigured meanwhile
    PathState& p = paths_[i];
    p.absent = got && !*got;
    if (p.absent) {
      p.usage.reset();
      p.error.clear();
      continue;
    }
    if (!got) {
      if (p.error.empty()) log_->warn("{}: {}", path, got.error().message);
      p.error = got.error().message;
      continue;
    }
    if (!p.error.empty()) log_->info("{}: readable again", path);
    p.error.clear();
    p.usage = **got;
    p.limits = limits_for(p.config, *p.usage);
    const Level before = p.level;
    p.level = p.hysteresis.update(*p.usage, p.limits, api_.clock.now());
    if (p.level != before) on_transition(p, before);
  }
  // The work gate: closed while any path with a recovery rule requires recovery.
  bool blocked = std::any_of(paths_.begin(), paths_.end(), [](const PathState& p) {
    return p.level == Level::recovery_required;
  });
  if (blocked && work_gate_.is_open()) work_gate_.close();
  if (!blocked && !work_gate_.is_open()) work_gate_.open();
  sampled_ = true;
}

void Guardian::on_transition(PathState& p, Level from) {
  p.since = api_.clock.wall_now();
  const auto& u = *p.usage;
  std::string msg = fmt::format("{}: {} -> {} ({} free of {})", p.config.path, to_string(from), to_string(p.level),
                                human_size(u.avail_bytes), human_size(u.total_bytes));
  if (p.level == Level::recovery_required) msg += "; " + recovery_reason(p);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kDiskStateChanged}, {"INSTANCED_PATH", p.config.path}};
    if (p.level > from)
      log_->warn("{}", msg);
    else
      log_->info("{}", msg);
  }
  api_.state.emit("disk", "path_state_changed", msg,
                  {{"path", p.config.path},
                   {"from", to_string(from)},
                   {"to", to_string(p.level)},
                   {"avail_bytes", u.avail_bytes},
                   {"avail_inodes", u.avail_inodes},
                   {"bytes_to_free", bytes_to_leave_recovery(u, p.limits, config_.margin.bytes)}});
  if (p.level > from) {
    // Explain what fills it, and free what the rules allow.
    if (!scan_) [[maybe_unused]] auto r = start_scan(fmt::format("{} entered {}", p.config.path, to_string(p.level)));
    const auto automatic = config_.reclaim.automatic;
    bool reclaim = (automatic == AutoReclaim::low) ||
                   (automatic == AutoReclaim::recovery_required && p.level == Level::recovery_required);
    if (reclaim && !reclaim_)
      [[maybe_unused]] auto r = start_reclaim({}, false, fmt::format("automatic: {} entered {}", p.config.path, to_string(p.level)));
  }
}

std::string Guardian::recovery_reason(const PathState& p) const {
  const auto& u = *p.usage;
  std::uint64_t need = bytes_to_leave_recovery(u, p.limits, config_.margin.bytes);
  const bool inodes_short = u.total_inodes > 0 && u.avail_inodes < p.limits.recovery_inodes + u.total_inodes / 100;
  if (need == 0 && inodes_short)
    return fmt::format("{} has {} free inodes of {}: delete files, then reboot with 'instancectl reboot'", p.config.path,
                       u.avail_inodes, u.total_inodes);
  if (need == 0) {
    // Freed enough; the state clears after `hold` above the rule, so it does not flap.
    auto since = p.hysteresis.better_since();
    auto left = since ? config_.hold - (api_.clock.now() - *since) : Clock::steady_time::duration(config_.hold);
    return fmt::format("{} has {} free, above the rule again; it is cleared after {} more seconds above it",
                       p.config.path, human_size(u.avail_bytes),
                       std::max<long long>(0, std::chrono::duration_cast<std::chrono::seconds>(left).count() + 1));
  }
  return fmt::format(
      "{} has {} free ({} bytes), below the {} recovery rule: free {} more bytes ({}), then reboot with "
      "'instancectl reboot'",
      p.config.path, human_size(u.avail_bytes), u.avail_bytes, human_size(p.limits.recovery_bytes), need,
      human_size(need));
}

std::optional<std::string> Guardian::veto(std::string_view action) const {
  for (const auto& p : paths_)
    if (p.level == Level::recovery_required && p.usage)
      return fmt::format("{} refused: {}", action, recovery_reason(p));
  return std::nullopt;
}

Result<void> Guardian::reboot() {
  if (auto reason = veto("reboot")) return Error{*reason};
  SpawnSpec spec;
  spec.argv = config_.reboot_command;
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin"};
  spec.capture_output = false;
  auto p = runner_.spawn(spec);
  if (!p) return Error{p.error().message};
  log_->warn("reboot requested: running {}", fmt::join(config_.reboot_command, " "));
  api_.state.emit("disk", "reboot", "reboot requested through instanced", {});
  // The child is reaped by the runner; its handle is not needed.
  return {};
}

// ---- scan ------------------------------------------------------------------------------

Result<void> Guardian::start_scan(std::string why) {
  if (scan_) return Error{"a scan is already running"};
  scan_ = std::make_unique<Job>();
  Job* job = scan_.get();
  job->why = std::move(why);
  job->started = api_.clock.wall_now();
  job->started_steady = api_.clock.now();
  ScanOptions options{static_cast<unsigned>(config_.scan_threads), static_cast<std::size_t>(config_.scan_top), true};
  std::string root = config_.scan_root;
  log_->info("scan of {} started ({})", root, job->why);
  job->thread = std::thread([this, job, root, options] {
    job->scan = scan_tree(root, options, job->progress);
    asio::post(ex_, [this, job] {
      if (scan_.get() == job) finish_scan();
    });
  });
  publish();
  return {};
}

void Guardian::finish_scan() {
  const ScanResult& r = scan_->scan;
  double seconds = std::chrono::duration<double>(api_.clock.now() - scan_->started_steady).count();
  json::object o{{"root", r.root},
                 {"started", iso8601(scan_->started)},
                 {"finished", iso8601(api_.clock.wall_now())},
                 {"seconds", seconds},
                 {"why", scan_->why},
                 {"bytes", r.bytes},
                 {"apparent_bytes", r.apparent},
                 {"files", r.files},
                 {"dirs", r.dirs},
                 {"errors", r.errors},
                 {"cancelled", r.cancelled},
                 {"top_dirs", entries_json(r.top_dirs)},
                 {"top_files", entries_json(r.top_files)}};
  json::array mounts;
  for (const auto& m : r.mounts_skipped) mounts.emplace_back(m);
  o["mounts_skipped"] = std::move(mounts);
  if (!r.error.empty()) o["error"] = r.error;
  log_->info("scan of {} done in {:.1f}s: {} in {} entries", r.root, seconds, human_size(r.bytes), r.files);
  last_scan_ = std::move(o);
  scan_.reset();
  fs::path dir = fs::path(state_dir_) / "disk";
  auto made = api_.fs.create_directories(dir, 0755);
  auto w = made ? api_.fs.write_file_atomic(dir / "scan.json", json::serialize(last_scan_), 0600) : Result<void>(made.error());
  if (!w) log_->warn("cannot keep the scan result: {}", w.error().message);
  publish();
}

void Guardian::load_cached_scan() {
  auto text = api_.fs.read_file(fs::path(state_dir_) / "disk" / "scan.json", 16 << 20);
  if (!text) return;
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  if (!ec && v.is_object()) last_scan_ = std::move(v.as_object());
}

// ---- reclaim ---------------------------------------------------------------------------

Result<void> Guardian::start_reclaim(std::vector<std::string> rules, bool dry_run, std::string why) {
  if (reclaim_) return Error{"a reclaim is already running"};
  const auto& names = rule_names();
  for (const auto& r : rules)
    if (std::find(names.begin(), names.end(), r) == names.end())
      return Error{fmt::format("no reclaim rule '{}'; the rules are: {}", r, fmt::join(names, ", ")), ErrorKind::invalid};
  if (rules.empty()) rules = names;
  reclaim_ = std::make_unique<Job>();
  Job* job = reclaim_.get();
  job->why = std::move(why);
  job->dry_run = dry_run;
  job->started = api_.clock.wall_now();
  job->started_steady = api_.clock.now();
  ReclaimContext ctx;
  ctx.now = api_.clock.wall_now();
  // Command rules run their CLI through the process runner, on the loop; this thread waits,
  // at most kCommandTimeout, then the command's process group is killed.
  ctx.run_command = [this, job](const std::vector<std::string>& argv) -> Result<std::pair<int, std::string>> {
    auto done = std::make_shared<std::promise<Result<std::pair<int, std::string>>>>();
    auto running = std::make_shared<std::shared_ptr<Process>>();  // set on the loop
    auto fut = done->get_future();
    asio::post(ex_, [this, argv, done, running] {
      SpawnSpec spec;
      spec.argv = argv;
      spec.env = {"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"};
      auto p = runner_.spawn(spec);
      if (!p) {
        done->set_value(Error{p.error().message});
        return;
      }
      std::shared_ptr<Process> proc = std::move(*p);
      *running = proc;
      asio::co_spawn(ex_, collect(proc, done), [done](std::exception_ptr e) {
        if (e) done->set_value(Error{"cancelled"});
      });
    });
    const auto deadline = std::chrono::steady_clock::now() + kCommandTimeout;
    while (fut.wait_for(200ms) != std::future_status::ready) {
      if (job->progress.cancel) return Error{"the agent is stopping"};
      if (std::chrono::steady_clock::now() < deadline) continue;
      asio::post(ex_, [running] {
        if (*running && !(*running)->exit_status()) (*running)->signal_group(SIGKILL);
        if (*running) (*running)->close_output();
      });
      if (fut.wait_for(10s) != std::future_status::ready) return Error{argv.front() + " did not end after SIGKILL"};
      (void)fut.get();
      return Error{fmt::format("{} timed out after {} s and was killed", argv.front(),
                               std::chrono::duration_cast<std::chrono::seconds>(kCommandTimeout).count())};
    }
    return fut.get();
  };
  ReclaimConfig config = config_.reclaim;
  log_->info("reclaim{} started: {} ({})", dry_run ? " (dry run)" : "", fmt::join(rules, ", "), job->why);
  job->thread = std::thread([this, job, rules, dry_run, config, ctx] {
    for (const auto& rule : rules) {
      if (job->progress.cancel) break;
      auto before = api_.fs.usage("/");
      auto r = run_rule(rule, config, dry_run, ctx);
      auto after = api_.fs.usage("/");
      if (r) job->reports.push_back(std::move(*r));
      job->measured.push_back(before && after ? static_cast<std::int64_t>(after->avail_bytes) - static_cast<std::int64_t>(before->avail_bytes) : 0);
    }
    asio::post(ex_, [this, job] {
      if (reclaim_.get() == job) finish_reclaim();
    });
  });
  publish();
  return {};
}

void Guardian::finish_reclaim() {
  Job& job = *reclaim_;
  std::uint64_t total = 0;
  json::array rules, full;
  for (std::size_t i = 0; i < job.reports.size(); ++i) {
    const auto& r = job.reports[i];
    total += r.bytes;
    auto o = report_json(r, kReportListed);
    o["avail_change_bytes"] = job.measured[i];
    rules.push_back(std::move(o));
    full.push_back(report_json(r, SIZE_MAX));
    for (const auto& d : r.deleted)
      log_->debug("reclaim {}: {} {} ({} bytes)", r.rule, r.dry_run ? "would delete" : "deleted", d.path, d.bytes);
    if (r.ran)
      log_->info("reclaim {}{}: {} files, {}{}{}", r.rule, r.dry_run ? " (dry run)" : "", r.files, human_size(r.bytes),
                 r.errors ? fmt::format(", {} errors", r.errors) : "", r.note.empty() ? "" : " - " + r.note);
  }
  const std::string finished = iso8601(api_.clock.wall_now());
  json::object o{{"started", iso8601(job.started)}, {"finished", finished}, {"why", job.why},
                 {"dry_run", job.dry_run},         {"bytes", total},       {"rules", std::move(rules)}};
  // The full report (every deletion) next to the state.
  fs::path dir = fs::path(state_dir_) / "disk";
  json::object file = o;
  file["rules"] = std::move(full);
  std::string name = fmt::format("reclaim-{}.json", finished.substr(0, 19));
  std::replace(name.begin(), name.end(), ':', '-');
  auto made = api_.fs.create_directories(dir, 0755);
  auto w = made ? api_.fs.write_file_atomic(dir / name, json::serialize(file), 0640) : Result<void>(made.error());
  if (w) o["report"] = (dir / name).string();
  else log_->warn("cannot write the reclaim report: {}", w.error().message);
  std::string msg = fmt::format("reclaim{}: {} {}", job.dry_run ? " (dry run)" : "", job.dry_run ? "would free" : "freed",
                                human_size(total));
  log_->info("{}", msg);
  api_.state.emit("disk", "reclaimed", msg, {{"bytes", total}, {"dry_run", job.dry_run}, {"why", job.why}});
  last_reclaim_ = std::move(o);
  reclaim_.reset();
  publish();
}

// ---- views -----------------------------------------------------------------------------

json::object Guardian::status_json() const {
  json::array paths;
  for (const auto& p : paths_) {
    json::object o{{"path", p.config.path}, {"state", p.absent ? "absent" : p.usage ? to_string(p.level) : "unknown"}, {"since", iso8601(p.since)}};
    if (p.usage) {
      for (auto& kv : usage_json(*p.usage)) o[kv.key()] = kv.value();
      o["low_bytes"] = p.limits.low_bytes;
      o["recovery_bytes"] = p.limits.recovery_bytes;
      o["bytes_to_free"] = p.level == Level::recovery_required ? bytes_to_leave_recovery(*p.usage, p.limits, config_.margin.bytes) : 0;
    }
    if (!p.error.empty()) o["error"] = p.error;
    paths.push_back(std::move(o));
  }
  json::object out{{"paths", std::move(paths)}, {"work_allowed", work_gate_.is_open()}};
  if (auto reason = veto("stop")) out["recovery"] = *reason;
  json::object scan;
  if (scan_) {
    scan = {{"state", "running"},
            {"started", iso8601(scan_->started)},
            {"why", scan_->why},
            {"progress", json::object{{"files", scan_->progress.files.load()},
                                      {"dirs", scan_->progress.dirs.load()},
                                      {"bytes", scan_->progress.bytes.load()}}}};
  } else {
    scan = {{"state", last_scan_.empty() ? "none" : "done"}};
  }
  if (!last_scan_.empty()) scan["last"] = last_scan_;
  out["scan"] = std::move(scan);
  json::object reclaim{{"state", reclaim_ ? "running" : last_reclaim_.empty() ? "none" : "done"}};
  if (!last_reclaim_.empty()) reclaim["last"] = last_reclaim_;
  out["reclaim"] = std::move(reclaim);
  return out;
}

void Guardian::publish() {
  Health h = sampled_ ? Health::ok : Health::starting;
  std::string summary;
  const PathState* worst = nullptr;
  for (const auto& p : paths_) {
    if (!p.error.empty() && (!worst || worst->level == Level::ok)) {
      h = std::max(h, Health::degraded);
      summary = fmt::format("{}: {}", p.config.path, p.error);
    }
    if (p.usage && p.level != Level::ok && (!worst || p.level > worst->level)) worst = &p;
  }
  if (worst) {
    if (worst->level == Level::recovery_required) {
      h = Health::failed;
      summary = recovery_reason(*worst);
    } else {
      h = std::max(h, Health::degraded);
      summary = fmt::format("{} is low: {} free (warning below {})", worst->config.path, human_size(worst->usage->avail_bytes),
                            human_size(worst->limits.low_bytes));
    }
  }
  if (summary.empty()) {
    std::vector<std::string> parts;
    for (const auto& p : paths_)
      if (p.usage) parts.push_back(fmt::format("{} {} free", p.config.path, human_size(p.usage->avail_bytes)));
    summary = parts.empty() ? "first sample pending" : fmt::format("{}", fmt::join(parts, ", "));
  }
  if (scan_) summary += fmt::format("; scanning ({} entries so far)", scan_->progress.files.load());
  json::object details;
  for (const auto& p : paths_)
    if (p.usage) details[p.config.path] = to_string(p.level);
  api_.state.publish("disk", h, summary, std::move(details));
  for (const auto& p : paths_)
    if (p.usage) {
      Labels l{{"path", p.config.path}};
      api_.state.metrics().set_gauge("instanced_disk_avail_bytes", "Bytes available to users on each watched path", l,
                                     static_cast<double>(p.usage->avail_bytes));
      api_.state.metrics().set_gauge("instanced_disk_avail_inodes", "Inodes available on each watched path", l,
                                     static_cast<double>(p.usage->avail_inodes));
      api_.state.metrics().set_gauge("instanced_disk_recovery_required",
                                     "1 while a path is below its recovery rule", l,
                                     p.level == Level::recovery_required ? 1 : 0);
    }
}

void Guardian::add_routes(status::Router& router) {
  using S = status::http::status;
  router.add(status::http::verb::get, "/v1/disk", [this](const status::Request&) {
    return status::json_response(S::ok, json::serialize(status_json()));
  });
  router.add(status::http::verb::post, "/v1/disk/scan", [this](const status::Request&) {
    auto r = start_scan("asked for");
    if (!r) return status::error_response(S::conflict, r.error().message);
    return status::json_response(S::accepted, R"({"scan":"started"})");
  });
  router.add(status::http::verb::post, "/v1/disk/reclaim", [this](const status::Request& req) {
    std::vector<std::string> rules;
    if (auto list = status::query_param(req, "rules"); list && !list->empty()) {
      std::size_t pos = 0;
      while (pos <= list->size()) {
        auto comma = list->find(',', pos);
        std::string one = list->substr(pos, comma == std::string::npos ? std::string::npos : comma - pos);
        if (!one.empty()) rules.push_back(one);
        if (comma == std::string::npos) break;
        pos = comma + 1;
      }
    }
    bool dry = status::query_param(req, "dry_run").value_or("0") == "1";
    auto r = start_reclaim(rules, dry, "asked for");
    if (!r) {
      const bool invalid = r.error().kind == ErrorKind::invalid;
      return status::error_response(invalid ? S::bad_request : S::conflict, r.error().message);
    }
    return status::json_response(S::accepted, R"({"reclaim":"started"})");
  });
  router.add(status::http::verb::post, "/v1/reboot", [this](const status::Request&) {
    auto r = reboot();
    if (!r) return status::error_response(S::conflict, r.error().message);
    return status::json_response(S::accepted, R"({"reboot":"started"})");
  });
}

}  // namespace instanced::disk
