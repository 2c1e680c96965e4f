#include "agent/diagnostics/diagnostics.hpp"

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <random>
#include <sys/stat.h>

#include "agent/control/backoff.hpp"
#include "agent/diagnostics/files.hpp"
#include "agent/diagnostics/upload.hpp"
#include "common/build_info.hpp"
#include "common/child_io.hpp"
#include "common/url.hpp"

namespace instanced::diagnostics {
namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kViewCap = 4ULL << 20;     // one status view
constexpr std::uint64_t kStateCap = 8ULL << 20;    // all state files together
constexpr std::uint64_t kStateFileCap = 2ULL << 20;
constexpr std::uint64_t kSystemCap = 2ULL << 20;   // the kernel log, nvidia-smi -q, the mount table
constexpr std::uint64_t kLogTailCap = 256 << 10;   // one setup or job log
constexpr std::size_t kSetupRunsPerScript = 3;
constexpr std::size_t kJobLogs = 20;
constexpr std::size_t kOutcomesKept = 16;  // the last bundles' outcomes, for their commands

// What the cap leaves for the files: tar's end blocks and the manifest's fixed part, and
// gzip's worst case on data that does not compress (5 bytes per 16 KiB block), taken off first.
std::uint64_t content_budget(std::uint64_t max_bytes) { return max_bytes - (64 << 10) - max_bytes / 1024; }

// What a file costs in the bundle beyond its bytes: its tar header and the padding of its
// last block, a share of its folder's header, a GNU long-name header, its manifest entry.
std::uint64_t overhead(const std::string& name) { return 2048 + 2 * name.size(); }

// State files that are put in a bundle: the agent's records (JSON) and logs. Not a
// workload's spec.json (its environment: a job's variables, a driver's keys), a container
// job's .env, the job queue's journal (every job as submitted), nor the mounts' credential
// files: users' data and secrets.
bool bundled_state_file(const fs::path& relative) {
  const auto ext = relative.extension();
  return (ext == ".json" && relative.filename() != "spec.json") || ext == ".log";
}

std::string new_id(Clock::wall_time now) {
  std::random_device rd;
  std::string stamp = iso8601(now);
  std::erase_if(stamp, [](char c) { return c == '-' || c == ':'; });
  return fmt::format("{}-{:04x}", stamp.substr(0, 15), rd() & 0xffff);
}

// The agent's own unit, from its cgroup ("…/instanced.service"), else instanced.service.
std::string own_unit(Filesystem& fs) {
  auto text = fs.read_file("/proc/self/cgroup", 64 << 10);
  if (text) {
    for (std::string_view rest = *text; !rest.empty();) {
      std::string_view line = rest.substr(0, rest.find('\n'));
      rest.remove_prefix(std::min(rest.size(), line.size() + 1));
      std::string_view last = line.substr(line.rfind('/') + 1);
      if (last.ends_with(".service")) return std::string(last);
    }
  }
  return "instanced.service";
}

struct Tail {
  std::string name;  // in the bundle
  fs::path from;
};

// Regular files below `dir` (not symbolic links, not below `skip`), newest first.
std::vector<fs::path> files_below(const fs::path& dir, const fs::path& skip) {
  std::vector<std::pair<fs::file_time_type, fs::path>> found;
  std::error_code ec;
  for (fs::recursive_directory_iterator it(dir, fs::directory_options::skip_permission_denied, ec), end; !ec && it != end;
       it.increment(ec)) {
    if (it->path() == skip) {
      it.disable_recursion_pending();
      continue;
    }
    if (!it->is_regular_file(ec) || it->is_symlink(ec)) continue;
    found.emplace_back(it->last_write_time(ec), it->path());
  }
  std::sort(found.begin(), found.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
  std::vector<fs::path> out;
  out.reserve(found.size());
  for (auto& f : found) out.push_back(std::move(f.second));
  return out;
}

struct Copy {
  std::string name;
  std::uint64_t bytes = 0;
  std::string error;
};


// Each tail into dir/name, at most `each` bytes, until `total` is spent.
std::vector<Copy> copy_tails(const fs::path& dir, const std::vector<Tail>& tails, std::uint64_t each, std::uint64_t total) {
  std::vector<Copy> out;
  for (const auto& t : tails) {
    const std::uint64_t cost = overhead(t.name);
    if (total < cost) break;
    const fs::path to = dir / t.name;
    std::error_code ec;
    fs::create_directories(to.parent_path(), ec);
    auto c = copy_tail(t.from, to, std::min(each, total - cost));
    out.push_back(c ? Copy{t.name, c->bytes, {}} : Copy{t.name, 0, c.error().message});
    total -= std::min(total, (c ? c->bytes : 0) + cost);
  }
  return out;
}

// The text into `out`, cut to `cap` bytes.
Produced write_head(const fs::path& out, std::string_view text, std::uint64_t cap) {
  const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(text.size(), cap));
  if (auto w = write_text(out, text.substr(0, n)); !w) return {0, w.error().message};
  if (n < text.size()) return {n, fmt::format("the last {} bytes were left out (the cap)", text.size() - n)};
  return {n, {}};
}

// "user:password" of each proxy URL in the agent's environment (it passes them on to the
// drivers): secrets too.
std::vector<std::string> environment_proxy_credentials() {
  std::vector<std::string> out;
  for (const char* name : {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"}) {
    const char* v = std::getenv(name);
    if (!v) continue;
    std::string_view url(v);
    auto at = url.rfind('@');
    if (at == std::string_view::npos) continue;
    auto start = url.find("://");
    start = start == std::string_view::npos ? 0 : start + 3;
    if (start < at) out.emplace_back(url.substr(start, at - start));
  }
  return out;
}

}  // namespace

struct Diagnostics::Build {
  fs::path dir;
  std::uint64_t budget = 0;
  json::array pieces;
  // A part's work that ran past its time: it may still write into `dir`, so nothing of it
  // is packed. Why, or "".
  std::string abandoned;
};

Diagnostics::Diagnostics(asio::any_io_executor ex, Api& api, ProcessRunner& runner, const DiagnosticsConfig& config,
                         const ProxyConfig& proxy, std::string state_dir, Sources sources)
    : ex_(ex),
      api_(api),
      runner_(runner),
      config_(config),
      proxy_(proxy),
      state_dir_(std::move(state_dir)),
      sources_(std::move(sources)),
      log_(api.logging.get("diagnostics")),
      requested_(ex),
      ended_(ex) {}

Diagnostics::~Diagnostics() = default;

void Diagnostics::reconfigure(const DiagnosticsConfig& config, const ProxyConfig& proxy) {
  config_ = config;
  proxy_ = proxy;
}

fs::path Diagnostics::folder() const { return fs::path(state_dir_) / "diagnostics"; }
fs::path Diagnostics::bundle_file() const { return folder() / fmt::format("instanced-diagnostics-{}.tar.gz", run_->id); }

asio::awaitable<void> Diagnostics::run() {
  // A bundle under way when this coroutine last ended (it failed, and is restarted): never
  // finished, so its waiters are answered now; its files go below.
  if (run_ && !run_->done()) end("interrupted: the diagnostics subsystem failed while making it");
  co_await clear();  // what an earlier run of the agent (or of this coroutine) left
  if (run_) run_->kept = false;
  publish();
  for (;;) {
    if (run_ && run_->state == "queued") {
      co_await make();
      continue;
    }
    const auto until = run_ && run_->kept ? run_->expires : Clock::steady_time::max();
    co_await requested_.sleep_until(api_.clock, until);
    if (run_ && run_->kept && run_->done() && api_.clock.now() >= run_->expires) {
      co_await clear();
      run_->kept = false;
      publish();
    }
  }
}

Diagnostics::Start Diagnostics::start(const std::string& upload_url, std::string requested_by) {
  if (run_ && !run_->done()) return {Answer::refused, fmt::format("diagnostics bundle {} is being made", run_->id)};
  std::optional<Url> upload;
  if (!upload_url.empty()) {
    // The URL holds a SAS: no message repeats any of it.
    auto parsed = parse_url(upload_url);
    if (!parsed || parsed->scheme.starts_with("ws"))
      return {Answer::invalid, "upload_url: not an http:// or https:// URL with a host"};
    upload = std::move(*parsed);
  }
  if (sources_.refusal)
    if (auto why = sources_.refusal()) return {Answer::refused, *why};
  run_ = std::make_unique<Run>();
  run_->id = new_id(api_.clock.wall_now());
  run_->requested_by = std::move(requested_by);
  run_->upload = std::move(upload);
  run_->started = api_.clock.wall_now();
  log_->info("diagnostics bundle {} asked for by the {}{}", run_->id, run_->requested_by,
             run_->upload ? ", to be uploaded to " + run_->upload->shown() : "");
  requested_.pulse();
  publish();
  return {Answer::started, run_->id};
}

asio::awaitable<Diagnostics::Outcome> Diagnostics::finished(std::string id) {
  for (;;) {
    if (auto it = outcomes_.find(id); it != outcomes_.end()) co_return it->second;
    co_await ended_.wait();
  }
}

asio::awaitable<void> Diagnostics::make() {
  run_->state = "collecting";
  publish();
  co_await clear();
  auto building = build();
  auto built = co_await std::move(building);
  if (!built) {
    co_await clear();  // the staging folder and a partial bundle
    co_return end(built.error().message);
  }
  Run& r = *run_;
  r.kept = true;
  r.expires = api_.clock.now() + config_.keep_for;
  if (r.upload) {
    co_await upload();
    co_return;
  }
  r.state = "ready";
  end({});
}

// The parts collected in a staging folder, then packed. Error: no bundle.
asio::awaitable<Result<void>> Diagnostics::build() {
  const std::uint64_t cap = config_.max_bytes.bytes;
  auto usage_of = [&fs = api_.fs, dir = folder()]() -> Result<FsUsage> {
    if (auto made = fs.create_directories(dir, 0700); !made) return made.error();
    return fs.usage(dir);
  };
  auto usage_task = api_.pool.run("diagnostics: free space", 10s, usage_of);
  auto usage = co_await std::move(usage_task);
  if (!usage) co_return usage.error();
  if (usage->avail_bytes < 2 * cap)
    co_return Error{fmt::format("{} has {} free; a bundle needs up to {} while it is made", folder().string(),
                                human_size(usage->avail_bytes), human_size(2 * cap))};
  Build b{folder() / ("bundle-" + run_->id), content_budget(cap), {}, {}};
  auto collecting = collect(b);
  auto collected = co_await std::move(collecting);
  if (!collected) co_return collected.error();
  run_->state = "packing";
  run_->step.clear();
  publish();
  auto packing = pack(b);
  co_return co_await std::move(packing);
}

asio::awaitable<Result<void>> Diagnostics::collect(Build& b) {
  static constexpr std::pair<const char*, StepFn> kSteps[] = {
      {"status views", &Diagnostics::views},   {"configuration", &Diagnostics::configuration},
      {"inventory", &Diagnostics::inventory},  {"state files", &Diagnostics::state_files},
      {"system", &Diagnostics::system},        {"gpu", &Diagnostics::gpu},
      {"logs", &Diagnostics::logs},            {"journal", &Diagnostics::journal},
  };
  auto mkdir = [&fs = api_.fs, dir = b.dir]() { return fs.create_directories(dir, 0700); };
  auto made_task = api_.pool.run("diagnostics: " + b.dir.string(), 10s, mkdir);
  auto made = co_await std::move(made_task);
  if (!made) co_return made.error();
  run_->steps = static_cast<int>(std::size(kSteps));
  for (const auto& [name, step] : kSteps) {
    run_->step = name;
    publish();
    co_await (this->*step)(b);
    if (!b.abandoned.empty()) co_return Error{b.abandoned + "; the bundle is not made"};
    ++run_->steps_done;
  }
  json::object manifest{{"id", run_->id},
                        {"agent_version", build_version()},
                        {"created", iso8601(api_.clock.wall_now())},
                        {"requested_by", run_->requested_by},
                        {"max_bytes", config_.max_bytes.bytes},
                        {"files", b.pieces}};
  json::array problems;
  for (const auto& p : run_->problems) problems.emplace_back(p);
  manifest["problems"] = std::move(problems);
  auto text = json::serialize(manifest);
  auto write = [dir = b.dir, text] { return write_text(dir / "manifest.json", text); };
  auto writing = api_.pool.run("diagnostics: manifest", 10s, write);
  co_return co_await std::move(writing);
}

void Diagnostics::record(Build& b, const std::string& name, std::uint64_t bytes, const std::string& problem) {
  json::object piece{{"file", name}, {"bytes", bytes}};
  if (!problem.empty()) {
    piece["problem"] = problem;
    run_->problems.push_back(fmt::format("{}: {}", name, problem));
  }
  b.pieces.emplace_back(std::move(piece));
  b.budget -= std::min(b.budget, bytes + overhead(name));
}

void Diagnostics::abandon(Build& b, const Error& e) {
  if (b.abandoned.empty()) b.abandoned = e.message;
}

asio::awaitable<void> Diagnostics::add_file(Build& b, std::string name, Producer produce) {
  const std::uint64_t cost = overhead(name);
  if (b.budget < cost) {
    record(b, name, 0, "left out: the bundle's cap was reached");
    co_return;
  }
  auto make = [out = b.dir / name, produce, cap = b.budget - cost]() {
    std::error_code ec;
    fs::create_directories(out.parent_path(), ec);
    return produce(out, cap);
  };
  auto made_task = api_.pool.run("diagnostics: " + name, config_.tool_timeout, make);
  auto made = co_await std::move(made_task);
  if (!made) co_return abandon(b, made.error());
  record(b, name, made->bytes, made->problem);
}

asio::awaitable<void> Diagnostics::add_tool(Build& b, std::string name, std::vector<std::string> argv,
                                            std::uint64_t cap) {
  const std::uint64_t cost = overhead(name);
  cap = std::min(cap, b.budget > cost ? b.budget - cost : 0);
  auto find = [program = argv[0]] { return find_program(program); };
  auto found_task = api_.pool.run("diagnostics: finding " + argv[0], 10s, find);
  auto found = co_await std::move(found_task);
  if (!found || found->empty()) {
    record(b, name, 0, found ? fmt::format("{} is not installed", argv[0]) : found.error().message);
    co_return;
  }
  if (cap == 0) {
    record(b, name, 0, "left out: the bundle's cap was reached");
    co_return;
  }
  argv[0] = *found;
  const fs::path out = b.dir / name;
  std::error_code ec;
  fs::create_directories(out.parent_path(), ec);
  auto ring = TailFile::create(out.string() + ".ring", cap);
  if (!ring) {
    record(b, name, 0, ring.error().message);
    co_return;
  }
  auto tail = std::make_shared<TailFile>(std::move(*ring));
  std::string write_error;
  auto sink = [&tail, &write_error](std::string_view bytes) {
    if (!write_error.empty()) return;
    if (auto w = tail->write(bytes); !w) write_error = w.error().message;
  };
  const char* path = std::getenv("PATH");
  SpawnSpec spec{argv, {fmt::format("PATH={}", path ? path : "/usr/sbin:/usr/bin:/sbin:/bin"), "LC_ALL=C", "SYSTEMD_COLORS=0"}};
  auto running = run_command_into(runner_, api_.clock, spec, config_.tool_timeout, sink);
  auto status = co_await std::move(running);
  auto finish = [tail, out] {
    auto kept = tail->finish(out);
    return kept ? Produced{*kept, {}} : Produced{0, kept.error().message};
  };
  auto kept_task = api_.pool.run("diagnostics: " + name, config_.tool_timeout, finish);
  auto kept = co_await std::move(kept_task);
  if (!kept) co_return abandon(b, kept.error());
  std::string problem = !status ? status.error().message
                        : !status->success() ? fmt::format("{}: {}", command_label(argv), status->describe())
                                             : !write_error.empty() ? write_error : kept->problem;
  if (problem.empty() && tail->written() > cap)
    problem = fmt::format("the first {} bytes were left out (the cap)", tail->written() - cap);
  record(b, name, kept->bytes, problem);
}

asio::awaitable<void> Diagnostics::views(Build& b) {
  for (const auto& path : sources_.router->paths(status::http::verb::get)) {
    if (path.starts_with("/v1/diagnostics")) continue;
    status::Request req{status::http::verb::get, path, 11};
    auto res = sources_.router->handle(req);
    if (res.result() != status::http::status::ok) continue;  // one that needs parameters
    std::string name = path == "/metrics" ? "agent/metrics.txt" : "agent" + path.substr(3) + ".json";
    std::string text = std::move(res.body());
    if (text.size() > kViewCap) text.resize(kViewCap);
    auto write = [text = std::move(text)](const fs::path& out, std::uint64_t cap) { return write_head(out, text, cap); };
    auto adding = add_file(b, name, write);
    co_await std::move(adding);
  }
}

asio::awaitable<void> Diagnostics::configuration(Build& b) {
  auto write = [text = sources_.effective_config()](const fs::path& out, std::uint64_t cap) {
    return write_head(out, text, cap);
  };
  auto adding = add_file(b, "agent/config.yaml", write);
  co_await std::move(adding);
}

asio::awaitable<void> Diagnostics::inventory(Build& b) {
  auto asking = sources_.inventory();
  json::object now = co_await std::move(asking);
  auto write = [text = json::serialize(now)](const fs::path& out, std::uint64_t cap) { return write_head(out, text, cap); };
  auto adding = add_file(b, "system/inventory.json", write);
  co_await std::move(adding);
}

asio::awaitable<void> Diagnostics::state_files(Build& b) {
  auto copy = [dir = b.dir, state = fs::path(state_dir_), skip = folder(), total = std::min(kStateCap, b.budget)] {
    std::vector<Tail> tails;
    for (const auto& f : files_below(state, skip)) {
      const fs::path relative = f.lexically_relative(state);
      if (bundled_state_file(relative)) tails.push_back({"state" / relative, f});
    }
    return copy_tails(dir, tails, kStateFileCap, total);
  };
  auto copied_task = api_.pool.run("diagnostics: state files", config_.tool_timeout, copy);
  auto copied = co_await std::move(copied_task);
  if (!copied) co_return abandon(b, copied.error());
  for (const auto& c : *copied) record(b, c.name, c.bytes, c.error);
}

asio::awaitable<void> Diagnostics::system(Build& b) {
  auto mountinfo = [](const fs::path& out, std::uint64_t cap) {
    auto c = copy_tail("/proc/self/mountinfo", out, std::min(cap, kSystemCap));
    return c ? Produced{c->bytes, {}} : Produced{0, c.error().message};
  };
  auto adding = add_file(b, "system/mountinfo.txt", mountinfo);
  co_await std::move(adding);
  auto running = add_tool(b, "system/kernel.log", {"dmesg", "-T"}, kSystemCap);
  co_await std::move(running);
}

asio::awaitable<void> Diagnostics::gpu(Build& b) {
  auto running = add_tool(b, "gpu/nvidia-smi-q.txt", {"nvidia-smi", "-q"}, kSystemCap);
  co_await std::move(running);
}

asio::awaitable<void> Diagnostics::logs(Build& b) {
  auto copy = [dirs = sources_.log_dirs(), dir = b.dir, total = b.budget / 4] {
    std::vector<Tail> tails;
    for (const auto& [kind, from] : dirs) {
      std::map<fs::path, std::size_t> per_folder;
      std::size_t taken = 0;
      for (const auto& f : files_below(from, {})) {
        if (f.extension() != ".log") continue;
        // Setup: the last runs of each script (one folder each); jobs: the last jobs.
        if (kind == "setup" ? ++per_folder[f.parent_path()] > kSetupRunsPerScript : ++taken > kJobLogs) continue;
        tails.push_back({"logs/" + kind + "/" + f.lexically_relative(from).string(), f});
      }
    }
    return copy_tails(dir, tails, kLogTailCap, total);
  };
  auto copied_task = api_.pool.run("diagnostics: logs", config_.tool_timeout, copy);
  auto copied = co_await std::move(copied_task);
  if (!copied) co_return abandon(b, copied.error());
  for (const auto& c : *copied) record(b, c.name, c.bytes, c.error);
}

asio::awaitable<void> Diagnostics::journal(Build& b) {
  const auto since = std::chrono::duration_cast<std::chrono::seconds>(config_.journal_since).count();
  auto running = add_tool(b, "journal.txt",
                          {"journalctl", "--no-pager", "--quiet", "--output=short-iso-precise",
                           fmt::format("--since=-{}s", since), "--unit=" + own_unit(api_.fs)},
                          b.budget);
  co_await std::move(running);
}

asio::awaitable<Result<void>> Diagnostics::pack(Build& b) {
  Run& r = *run_;
  // Every secret value the agent holds, the proxy credentials of its environment, and the
  // upload URL's signature. A secret file that is there but cannot be read fails the
  // bundle: what it holds could not be looked for. (One that is not there holds nothing
  // the agent could have written anywhere.)
  auto gather = [files = sources_.secret_files(), query = r.upload ? r.upload->target : std::string()]()
      -> Result<std::vector<std::string>> {
    std::vector<std::string> secrets;
    for (const auto& f : files) {
      std::error_code ec;
      if (!fs::exists(f, ec)) continue;
      auto text = read_regular_file(f, 64 << 10);
      if (!text) return Error{fmt::format("a secret file cannot be read, so its value cannot be kept out: {}", text.error().message)};
      for (auto& s : secrets_in(*text)) secrets.push_back(std::move(s));
    }
    for (const auto& credentials : environment_proxy_credentials())
      for (auto& s : secrets_in(credentials)) secrets.push_back(std::move(s));
    if (auto q = query.find('?'); q != std::string::npos)
      for (auto& s : secrets_in(query.substr(q))) secrets.push_back(std::move(s));
    return secrets;
  };
  auto gathered_task = api_.pool.run("diagnostics: secrets", 10s, gather);
  auto gathered = co_await std::move(gathered_task);
  if (!gathered) co_return gathered.error();
  auto scrub = [dir = b.dir, secrets = *gathered]() -> Result<std::uint64_t> {
    std::uint64_t replaced = 0;
    for (const auto& f : files_below(dir, {})) {
      Scrubber s(secrets);
      if (auto w = scrub_file(f, s); !w) return w.error();
      replaced += s.replaced();
    }
    return replaced;
  };
  auto scrubbed_task = api_.pool.run("diagnostics: redaction", config_.tool_timeout, scrub);
  auto scrubbed = co_await std::move(scrubbed_task);
  if (!scrubbed) co_return scrubbed.error();
  r.redacted = *scrubbed;

  const fs::path partial = bundle_file().string() + ".partial";
  auto find_tar = [] { return find_program("tar"); };
  auto tar_path_task = api_.pool.run("diagnostics: finding tar", 10s, find_tar);
  auto tar_path = co_await std::move(tar_path_task);
  if (!tar_path || tar_path->empty()) co_return Error{"tar is not installed"};
  SpawnSpec spec{{*tar_path, "--create", "--gzip", "--numeric-owner", "--owner=0", "--group=0",
                  "--file=" + partial.string(), "--directory=" + b.dir.string(), "."},
                 {"LC_ALL=C"}};
  auto taring = run_command(runner_, api_.clock, spec, config_.tool_timeout);
  auto tarred = co_await std::move(taring);
  if (!tarred) co_return tarred.error();
  if (!tarred->status.success())
    co_return Error{fmt::format("tar: {}: {}", tarred->status.describe(), tarred->last_line())};
  auto finish = [staging = b.dir, partial, file = bundle_file(), cap = config_.max_bytes.bytes]()
      -> Result<std::pair<std::uint64_t, std::string>> {
    std::error_code ec;
    fs::remove_all(staging, ec);
    const auto size = fs::file_size(partial, ec);
    if (ec) return Error{fmt::format("{}: {}", partial.string(), ec.message())};
    if (size > cap) return Error{fmt::format("the bundle is {} bytes, over diagnostics.max_bytes ({})", size, cap)};
    ::chmod(partial.c_str(), 0600);
    fs::rename(partial, file, ec);
    if (ec) return Error{fmt::format("{}: {}", file.string(), ec.message())};
    auto sum = sha256_file(file);
    if (!sum) return sum.error();
    return std::pair{size, *sum};
  };
  auto done_task = api_.pool.run("diagnostics: the bundle", config_.tool_timeout, finish);
  auto done = co_await std::move(done_task);
  if (!done) co_return done.error();
  r.bytes = done->first;
  r.sha256 = done->second;
  co_return Result<void>{};
}

asio::awaitable<void> Diagnostics::upload() {
  Run& r = *run_;
  r.state = "uploading";
  control::Backoff backoff(config_.upload_backoff, std::chrono::minutes(1), std::random_device{}());
  std::string last;
  for (int attempt = 1; attempt <= config_.upload_attempts; ++attempt) {
    r.attempts = attempt;
    r.sent = 0;
    publish();
    auto on_sent = [this](std::uint64_t sent) { run_->sent = sent; };
    auto put = put_blob(*r.upload, bundle_file(), r.bytes, config_.upload_timeout, on_sent, proxy_);
    PutOutcome o = co_await std::move(put);
    if (o.ok) {
      r.state = "uploaded";
      co_return end({});
    }
    last = o.error;
    log_->warn("diagnostics bundle {}: upload attempt {} of {} failed: {}", r.id, attempt, config_.upload_attempts, last);
    if (!o.retry || attempt == config_.upload_attempts) break;
    co_await api_.clock.sleep_for(backoff.next());
  }
  end(fmt::format("upload to {} failed after {} attempt{}: {}", r.upload->shown(), r.attempts,
                  r.attempts == 1 ? "" : "s", last));
}

void Diagnostics::end(std::string error) {
  Run& r = *run_;
  r.ended = api_.clock.wall_now();
  r.step.clear();
  json::object data{{"id", r.id}, {"requested_by", r.requested_by}};
  if (r.kept) {
    data["bytes"] = r.bytes;
    data["sha256"] = r.sha256;
  }
  if (r.upload) data["upload"] = r.upload->shown();
  if (error.empty()) {
    log_->info("diagnostics bundle {}: {} bytes, sha256 {}{}", r.id, r.bytes, r.sha256,
               r.upload ? ", uploaded to " + r.upload->shown() : "");
    api_.state.emit("diagnostics", "diagnostics_ready", fmt::format("diagnostics bundle {} is {}", r.id, r.state), data);
  } else {
    r.state = "failed";
    r.error = std::move(error);
    data["error"] = r.error;
    log_->warn("diagnostics bundle {} failed: {}", r.id, r.error);
    api_.state.emit("diagnostics", "diagnostics_failed", r.error, data);
  }
  outcomes_[r.id] = Outcome{r.state == "uploaded" || r.state == "ready", status_json(), r.error};
  if (outcomes_.size() > kOutcomesKept) outcomes_.erase(outcomes_.begin());  // ids sort by time
  publish();
  ended_.pulse();
}

asio::awaitable<void> Diagnostics::clear() {
  auto remove = [dir = folder()] {
    std::error_code ec;
    for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) fs::remove_all(it->path(), ec);
    return true;
  };
  auto removed_task = api_.pool.run("diagnostics: clearing " + folder().string(), 30s, remove);
  auto removed = co_await std::move(removed_task);
  if (!removed) log_->warn("{}", removed.error().message);
}

json::object Diagnostics::status_json() const {
  if (!run_) return {{"state", "none"}};
  const Run& r = *run_;
  json::object o{{"id", r.id},       {"state", r.state},           {"requested_by", r.requested_by},
                 {"started", iso8601(r.started)}, {"steps_done", r.steps_done}, {"steps", r.steps}};
  if (!r.step.empty()) o["step"] = r.step;
  if (r.ended) o["ended"] = iso8601(*r.ended);
  if (r.bytes > 0) {
    o["bytes"] = r.bytes;
    o["sha256"] = r.sha256;
    o["redacted"] = r.redacted;
    o["available"] = r.kept;
  }
  if (r.upload) {
    o["upload"] = json::object{{"url", r.upload->shown()}, {"attempts", r.attempts}, {"sent", r.sent},
                               {"total", r.bytes}};
  }
  if (!r.error.empty()) o["error"] = r.error;
  json::array problems;
  for (const auto& p : r.problems) problems.emplace_back(p);
  o["problems"] = std::move(problems);
  return o;
}

void Diagnostics::publish() {
  if (!run_) {
    api_.state.publish("diagnostics", Health::ok, "no bundle made");
    return;
  }
  const Run& r = *run_;
  std::string summary = r.done() ? fmt::format("bundle {}: {}{}", r.id, r.state, r.error.empty() ? "" : ": " + r.error)
                                 : fmt::format("bundle {}: {}{}", r.id, r.state, r.step.empty() ? "" : " (" + r.step + ")");
  // A failed bundle is the operator's to look at, not a fault of the VM.
  api_.state.publish("diagnostics", Health::ok, std::move(summary), status_json());
}

}  // namespace instanced::diagnostics
