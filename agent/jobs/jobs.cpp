#include "agent/jobs/jobs.hpp"

#include "common/message_ids.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>
#include <cstring>
#include <csignal>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

namespace instanced::jobs {
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

namespace {

constexpr auto kLookupTimeout = 10s;
constexpr auto kDrainGrace = 250ms;     // output read after the job's exit
constexpr auto kToolTimeout = 60s;      // podman inspect, rm, kill, image exists
constexpr auto kLoadTimeout = 10min;    // podman load of an image archive
constexpr auto kGpuRecheck = 2s;        // while a job waits for GPUs
constexpr auto kStoreRetry = 10s;       // while state_dir/jobs cannot be written
constexpr std::size_t kToolOutputMax = 64 << 10;
const char* kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

bool is_cancelled(const boost::system::system_error& e) { return e.code() == asio::error::operation_aborted; }

// Of a steady or a wall clock: their durations differ in libc++ (microseconds for the wall).
template <class Rep, class Period>
double seconds(std::chrono::duration<Rep, Period> d) { return std::chrono::duration<double>(d).count(); }

// cgroup v2's cpu.weight (100 is the default share) as a niceness: each nice step is
// about a 1.25 ratio of CPU time under the kernel's scheduler.
int nice_for_weight(int weight) {
  if (weight == 100) return 0;
  double n = std::log(100.0 / weight) / std::log(1.25);
  return std::clamp(static_cast<int>(std::lround(n)), -20, 19);
}

// The variables the container CLI needs from the agent's own environment.
std::vector<std::string> runtime_environment() {
  std::vector<std::string> env;
  for (const char* name : {"PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "CONTAINERS_CONF",
                           "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "DOCKER_HOST", "DOCKER_CONFIG",
                           "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  if (!std::getenv("PATH")) env.push_back(std::string("PATH=") + kDefaultPath);
  return env;
}

}  // namespace

struct Jobs::Live {
  Live(asio::any_io_executor ex) : pump_done(ex, "output"), poke(ex, asio::steady_timer::time_point::max()) {}
  std::unique_ptr<Process> proc;
  std::unique_ptr<RunLog> log;
  Gate pump_done;
  asio::steady_timer poke;  // cancelled when a cancel is asked for
  asio::cancellation_signal stop;  // the agent is stopping
  std::optional<ContainerRuntimeCli> cli;  // container jobs
  bool cancel = false;
  std::string cancel_reason;
  bool timed_out = false;
};

Jobs::Jobs(asio::any_io_executor ex, Api& api, ProcessRunner& runner, const JobsConfig& config, std::string state_dir,
           std::string status_socket, GpuSource gpus)
    : ex_(ex),
      api_(api),
      runner_(runner),
      config_(config),
      state_dir_(std::move(state_dir)),
      status_socket_(std::move(status_socket)),
      gpus_(std::move(gpus)),
      log_(api.logging.get("jobs")),
      wake_(ex, asio::steady_timer::time_point::max()),
      live_changed_(ex, asio::steady_timer::time_point::max()) {
  reconfigure(config);
  load();
}

Jobs::~Jobs() = default;

void Jobs::reconfigure(const JobsConfig& config) {
  config_ = config;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  slots_ = config_.slots > 0 ? static_cast<std::size_t>(config_.slots) : static_cast<std::size_t>(std::max(1L, cpus) * 2);
  poke();
}

// ---- the store ---------------------------------------------------------------------------

void Jobs::load() {
  fs::path dir = fs::path(state_dir_) / "jobs";
  if (auto r = api_.fs.create_directories(dir, 0700); !r) {
    store_error_ = r.error().message;
    return;
  }
  std::error_code ec;
  std::size_t bad = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& file = it->path();
    if (file.extension() != ".json" || file.filename().string().starts_with(".")) continue;
    auto text = api_.fs.read_file(file, 1 << 20);
    auto rec = text ? JobRecord::parse(*text) : Result<JobRecord>(text.error());
    if (!rec || rec->spec.id + ".json" != file.filename().string()) {
      // Kept aside for a person, never silently dropped.
      std::string why = rec ? "its id does not match the file name" : rec.error().message;
      log_->error("job file {} is unreadable ({}); moved to {}.bad", file.string(), why, file.filename().string());
      std::error_code rc;
      fs::rename(file, fs::path(file.string() + ".bad"), rc);
      ++bad;
      continue;
    }
    auto job = std::make_unique<JobRecord>(std::move(*rec));
    next_seq_ = std::max(next_seq_, job->seq + 1);
    if (job->state == JobState::queued)
      queue_[job->seq] = job.get();
    else if (is_finished(job->state))
      finished_[job->seq] = job->spec.id;
    jobs_[job->spec.id] = std::move(job);
  }
  if (!jobs_.empty() || bad)
    log_->info("{} jobs read from {} ({} queued){}", jobs_.size(), dir.string(), queue_.size(),
               bad ? fmt::format(", {} unreadable", bad) : "");
}

// state_dir/jobs/ID.json (the record) and ID.env (a container job's variables).
fs::path Jobs::store_file(const std::string& id, const char* extension) const {
  return fs::path(state_dir_) / "jobs" / (id + extension);
}

Result<void> Jobs::persist(const JobRecord& job) {
  auto r = api_.fs.write_file_atomic(store_file(job.spec.id, ".json"), job.to_text(), 0600);
  if (!r) {
    if (!store_error_) log_->error("cannot record job {}: {}", job.spec.id, r.error().message);
    store_error_ = r.error().message;
    return r;
  }
  if (store_error_) log_->info("job state recorded again");
  store_error_.reset();
  return {};
}

void Jobs::prune() {
  auto it = finished_.begin();
  while (finished_.size() > static_cast<std::size_t>(config_.keep_finished) && it != finished_.end()) {
    std::string id = it->second;
    if (live_.contains(id)) {  // still being wrapped up: pruned at a later turn
      ++it;
      continue;
    }
    it = finished_.erase(it);
    auto j = jobs_.find(id);
    if (j == jobs_.end()) continue;
    std::error_code ec;
    fs::remove(store_file(id, ".json"), ec);
    if (!j->second->log.empty()) fs::remove(j->second->log, ec);
    jobs_.erase(j);
  }
}

// ---- the loop ----------------------------------------------------------------------------

asio::awaitable<void> Jobs::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  if (!config_.enabled) log_->info("the job queue is disabled (jobs.enabled: false)");
  try {
    co_await recover();
    recovered_ = true;
    publish();
    for (;;) {
      dispatch();
      publish();
      auto until = asio::steady_timer::time_point::max();
      auto now = api_.clock.now();
      if (gpu_blocked_) until = now + kGpuRecheck;  // GPUs may turn healthy or free up
      if (store_error_) until = std::min(until, now + kStoreRetry);
      if (now < hold_until_) until = std::min(until, hold_until_);
      // The wake timer runs on the steady clock; the agent's clock is real in production.
      wake_.expires_at(until == asio::steady_timer::time_point::max()
                           ? until
                           : asio::steady_timer::clock_type::now() + (until - now));
      Gate* closed = closed_gate();
      boost::system::error_code ec;
      if (closed && !queue_.empty()) {
        // Queued jobs start when the gate opens (the disk's first look, setup done).
        auto opened = closed->wait();
        auto woken = wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
        auto either = std::move(opened) || std::move(woken);
        co_await first_error(std::move(either));
      } else {
        co_await wake_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      }
      auto cs = co_await asio::this_coro::cancellation_state;
      if (cs.cancelled() != asio::cancellation_type::none) throw boost::system::system_error(asio::error::operation_aborted);
    }
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) throw;
  }
  // Stopping: running jobs are left as they are (containers are re-attached after the
  // restart, processes are found and reported lost); their coroutines end now.
  stopping_ = true;
  // Each job's coroutine filters all but terminal cancellation (co_spawn's default).
  for (auto& [id, live] : live_) live->stop.emit(asio::cancellation_type::terminal);
  // They record what they must and end within a few loop turns; bounded all the same.
  co_await asio::this_coro::reset_cancellation_state(ignore_cancellation);
  {
    auto ended = until_no_live_jobs();
    auto limit = api_.clock.sleep_for(5s);
    auto either = std::move(ended) || std::move(limit);
    co_await first_error(std::move(either));
  }
  if (!live_.empty()) log_->warn("{} jobs' supervisors did not end within 5s of the stop", live_.size());
}

Gate* Jobs::closed_gate() const {
  for (Gate* g : prerequisites_)
    if (!g->is_open()) return g;
  return nullptr;
}

std::size_t Jobs::free_slots() const { return live_.size() >= slots_ ? 0 : slots_ - live_.size(); }

std::vector<unsigned> Jobs::free_gpus(const GpuView& view) const {
  std::vector<unsigned> free;
  for (unsigned g : view.usable) {
    bool held = false;
    for (const auto& [id, live] : live_) {
      const auto& j = *jobs_.at(id);
      if (std::find(j.gpus.begin(), j.gpus.end(), g) != j.gpus.end()) {
        held = true;
        break;
      }
    }
    if (!held) free.push_back(g);
  }
  return free;
}

void Jobs::dispatch() {
  gpu_blocked_ = false;
  // Not before the jobs that were running are known again (their slots and GPUs).
  if (stopping_ || !recovered_ || !config_.enabled || queue_.empty() || closed_gate()) return;
  if (api_.clock.now() < hold_until_) return;
  GpuView view = gpus_ ? gpus_() : GpuView{};
  std::vector<Waiting> waiting;
  for (const auto& [seq, job] : queue_) waiting.push_back({job->spec.id, job->spec.gpus});
  DispatchPlan plan = plan_dispatch(waiting, free_slots(), view, free_gpus(view));
  gpu_blocked_ = plan.gpu_blocked;
  for (auto& n : plan.never) {
    // Submitted before the GPUs were known: it can never run here.
    JobRecord& job = *jobs_.at(n.id);
    queue_.erase(job.seq);
    finish(job, JobState::failed, std::move(n.reason), {});
  }
  for (auto& s : plan.start) {
    start(*jobs_.at(s.id), std::move(s.gpus));
    if (store_error_) return;  // not recorded: nothing more starts until it can be
  }
}

void Jobs::start(JobRecord& job, std::vector<unsigned> gpus) {
  const JobRecord before = job;
  job.state = JobState::starting;
  job.gpus = std::move(gpus);
  job.started = api_.clock.wall_now();
  job.log = (fs::path(config_.log_dir) / (job.spec.id + ".log")).string();
  if (!job.spec.image.empty()) job.container = container_name(job.spec.id);
  // On disk before anything runs: after a crash the job is found, never run twice.
  if (!persist(job)) {
    job = before;
    return;
  }
  queue_.erase(job.seq);
  ++started_total_;
  wait_seconds_total_ += seconds(job.started - job.submitted);
  auto& live = live_[job.spec.id];
  live = std::make_unique<Live>(ex_);
  spawn_supervisor(job.spec.id, run_job(job.spec.id));
}

// The job's coroutine, stopped through its Live's signal when the agent stops.
void Jobs::spawn_supervisor(const std::string& id, asio::awaitable<void> work) {
  // The Live (and the cancellation signal co_spawn is bound to) goes once the coroutine
  // has completed, from a handler of its own: never from inside the coroutine.
  auto done = [this, id](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        log_->error("job {}: {}", id, ex.what());
      }
    }
    asio::post(ex_, [this, id] {
      live_.erase(id);
      live_changed_.cancel();
      poke();
      publish();
    });
  };
  asio::co_spawn(ex_, std::move(work), asio::bind_cancellation_slot(live_.at(id)->stop.slot(), done));
}

// ---- one job ------------------------------------------------------------------------------

std::vector<std::string> Jobs::environment(const JobRecord& job, const UserIdentity& user) const {
  std::map<std::string, std::string> env = login_environment(user);
  for (const auto& [k, v] : job.spec.env) env[k] = v;
  env["INSTANCED_JOB_ID"] = job.spec.id;  // also the marker its processes are found by
  env["INSTANCED_SOCKET"] = status_socket_;
  // The GPUs it holds, and no others: NVML's indices are in PCI bus order.
  GpuView view = gpus_ ? gpus_() : GpuView{};
  if (!job.gpus.empty() || view.total > 0) {
    std::string list;
    for (unsigned g : job.gpus) list += (list.empty() ? "" : ",") + std::to_string(g);
    env["CUDA_VISIBLE_DEVICES"] = list;
    env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID";
  }
  return environment_entries(env);
}

asio::awaitable<Result<ContainerRuntimeCli>> Jobs::runtime() {
  const JobsConfig c = config_;
  if (c.runtime == ContainerRuntime::none)
    co_return Error{"this agent runs no containers (jobs.runtime: none)"};
  auto find = [c]() -> Result<ContainerRuntimeCli> {
    if (c.runtime != ContainerRuntime::docker)
      if (auto p = find_program(c.podman); !p.empty()) return ContainerRuntimeCli{RuntimeKind::podman, p};
    if (c.runtime != ContainerRuntime::podman)
      if (auto p = find_program(c.docker); !p.empty()) return ContainerRuntimeCli{RuntimeKind::docker, p};
    switch (c.runtime) {
      case ContainerRuntime::podman: return Error{fmt::format("the container runtime '{}' is not installed (jobs.podman)", c.podman)};
      case ContainerRuntime::docker: return Error{fmt::format("the container runtime '{}' is not installed (jobs.docker)", c.docker)};
      default: return Error{"no container runtime is installed (neither podman nor docker was found on PATH)"};
    }
  };
  const std::string what = "looking for the container runtime";
  auto found = co_await api_.pool.run(what, kLookupTimeout, find);
  if (!found) co_return found.error();
  co_return *found;
}

// Runs a short container CLI command to its end; its output, or an error with its last line.
asio::awaitable<Result<std::string>> Jobs::run_tool(std::vector<std::string> argv, Duration timeout) {
  SpawnSpec spec;
  spec.argv = argv;
  spec.env = runtime_environment();
  auto ran = co_await run_command(runner_, api_.clock, std::move(spec), timeout, kToolOutputMax);
  if (!ran) co_return ran.error();
  if (!ran->status.success()) {
    std::string last = ran->last_line();
    co_return Error{fmt::format("{}: {}{}", command_label(argv), ran->status.describe(), last.empty() ? "" : ": " + last)};
  }
  co_return std::move(ran->output);
}

// Stops what carries the job's INSTANCED_JOB_ID (SIGTERM, SIGKILL after kill_grace).
asio::awaitable<std::vector<pid_t>> Jobs::kill_marked(std::string id) {
  const std::string marker = "INSTANCED_JOB_ID=" + id;
  co_return co_await stop_marked(runner_, api_.pool, api_.clock, log_, marker, config_.kill_grace);
}

// SIGTERM (for a container: `kill --signal TERM`), SIGKILL after kill_grace.
asio::awaitable<void> Jobs::stop_job(JobRecord& job, Live& live, const char* why) {
  Process& p = *live.proc;
  log_->info("job {}: stopping it ({})", job.spec.id, why);
  if (live.cli) {
    auto argv = kill_argv(*live.cli, job.container, "TERM");
    auto r = co_await run_tool(std::move(argv), kToolTimeout);
    if (!r) p.signal_group(SIGTERM);  // not created yet: the CLI itself
  } else {
    p.signal_group(SIGTERM);
  }
  if (co_await exit_within(p, api_.clock, config_.kill_grace)) co_return;
  log_->warn("job {}: still running {} after SIGTERM: SIGKILL", job.spec.id, format_duration(config_.kill_grace));
  if (live.cli) {
    auto argv = kill_argv(*live.cli, job.container, "KILL");
    (void)co_await run_tool(std::move(argv), kToolTimeout);
  }
  p.signal_group(SIGKILL);
  if (!co_await exit_within(p, api_.clock, config_.kill_grace))
    log_->error("job {}: did not end even after SIGKILL (stuck in the kernel?)", job.spec.id);
}

asio::awaitable<ExitStatus> Jobs::supervise(JobRecord& job, Live& live) {
  Process& p = *live.proc;
  // From the job's start: a container re-attached after a restart keeps its deadline.
  auto left = job.spec.timeout.value_or(config_.default_timeout);
  if (job.started != Clock::wall_time{}) left -= std::chrono::duration_cast<Duration>(api_.clock.wall_now() - job.started);
  const auto deadline = api_.clock.now() + std::max(left, Duration::zero());
  std::optional<ExitStatus> status;
  while (!status) {
    if (live.cancel) {
      co_await stop_job(job, live, "cancelled");
      break;
    }
    auto exit = p.wait();
    auto limit = api_.clock.sleep_until(deadline);
    boost::system::error_code ec;
    auto poked = live.poke.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    auto any = std::move(exit) || std::move(limit) || std::move(poked);
    auto r = co_await first_error(std::move(any));
    if (r.index() == 0) {
      status = std::get<0>(r);
    } else if (r.index() == 1) {
      if ((status = p.exit_status())) break;  // ended right at the deadline
      live.timed_out = true;
      co_await stop_job(job, live, "timed out");
      break;
    }
  }
  if (!status) status = p.exit_status().value_or(ExitStatus{-1, SIGKILL});
  // Its output ends when the last holder of the pipe closes it; a process it left behind
  // may hold it for ever.
  co_await finish_output(p, live.pump_done, api_.clock, kDrainGrace);
  co_return *status;
}

// A job's run, top to bottom: what to spawn, spawn it, watch it to its end, record the end.
asio::awaitable<void> Jobs::run_job(std::string id) {
  JobRecord& job = *jobs_.at(id);
  Live& live = *live_.at(id);
  Ending end;
  try {
    auto spec = co_await spawn_spec(job, live);
    Result<void> started = spec ? start_process(job, live, *spec) : Result<void>(spec.error());
    if (started)
      end = co_await watch(job, live);
    else
      end.reason = started.error().message;
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) {
      // The agent is stopping: the record stays as it is (running); the next start
      // re-attaches the container or reports the process lost.
      if (live.log) job.layout = live.log->finish();
      (void)persist(job);
      co_return;
    }
    end.reason = e.what();
  } catch (const std::exception& e) {
    end.reason = e.what();
  }
  if (end.state != JobState::succeeded && live.cancel) end = Ending{JobState::cancelled, live.cancel_reason};
  conclude(job, live, std::move(end));
  if (live.cli && live.proc) {
    const ContainerRuntimeCli c = *live.cli;
    const std::string name = job.container;
    co_await remove_container(c, name);
  }
}

// The user, the working folder and the program, looked up off the loop (NSS and stat may
// block: LDAP, a hung file share), bounded.
asio::awaitable<Result<Jobs::Prepared>> Jobs::prepare(const JobRecord& job) {
  const bool container = !job.spec.image.empty();
  const std::string user_name = job.spec.user.empty() ? config_.user : job.spec.user;
  const std::string workdir = job.spec.workdir, program = job.spec.command.front();
  std::string search = kDefaultPath;
  if (auto it = job.spec.env.find("PATH"); it != job.spec.env.end()) search = it->second;
  const std::optional<unsigned> owner = job.owner_uid;
  auto lookup = [user_name, owner, workdir, program, search, container]() -> Result<Prepared> {
    auto u = owner ? lookup_user(static_cast<uid_t>(*owner)) : lookup_user(user_name);
    if (!u) return u.error();
    Prepared p{std::move(*u), program};
    struct stat st {};
    if (!workdir.empty()) {
      const int err = ::stat(workdir.c_str(), &st) != 0 ? errno : S_ISDIR(st.st_mode) ? 0 : ENOTDIR;
      if (err) return Error{fmt::format("workdir {}: {}", workdir, std::strerror(err))};
    }
    if (!container) {
      p.program = find_program(program, search);
      if (p.program.empty())
        return Error{program.find('/') != std::string::npos
                         ? fmt::format("command[0]: {} is not an executable file", program)
                         : fmt::format("command[0]: '{}' was not found on the job's PATH", program)};
    }
    return p;
  };
  const std::string what = fmt::format("preparing job {} (user {}, workdir, program)", job.spec.id,
                                       owner ? "uid " + std::to_string(*owner) : user_name);
  auto prepared = co_await api_.pool.run(what, kLookupTimeout, lookup);
  co_return prepared;
}

// What to spawn: the job's own command, or the container runtime's `run` of its image.
asio::awaitable<Result<SpawnSpec>> Jobs::spawn_spec(JobRecord& job, Live& live) {
  if (!job.spec.image.empty()) {
    auto cli = co_await runtime();
    if (!cli) co_return cli.error();
    live.cli = *cli;
  }
  auto prepared = co_await prepare(job);
  if (!prepared) co_return prepared.error();
  if (!live.cli) co_return process_spec(job, *prepared);
  const ContainerRuntimeCli cli = *live.cli;  // named: no temporaries in a co_await (GCC 12)
  auto spec = co_await container_spec(job, cli, *prepared);
  co_return spec;
}

SpawnSpec Jobs::process_spec(const JobRecord& job, const Prepared& prepared) const {
  SpawnSpec spec;
  spec.cwd = !job.spec.workdir.empty() ? job.spec.workdir : "/";
  spec.argv = job.spec.command;
  spec.argv.front() = prepared.program;
  spec.env = environment(job, prepared.user);
  if (prepared.user.uid != ::geteuid()) spec.user = prepared.user;
  if (config_.memory_limit.bytes) spec.limits.emplace_back(RLIMIT_AS, config_.memory_limit.bytes);
  if (config_.max_open_files) spec.limits.emplace_back(RLIMIT_NOFILE, static_cast<std::uint64_t>(config_.max_open_files));
  if (config_.max_processes) spec.limits.emplace_back(RLIMIT_NPROC, static_cast<std::uint64_t>(config_.max_processes));
  spec.nice = nice_for_weight(job.spec.cpu_weight);
  if (job.owner_uid) spec.nice = std::max(spec.nice, 0);  // raising priority is root's
  return spec;
}

// The image present (loaded from image_archive if not), no stale container of the name,
// the variables in a root-only file: then `run`'s command line.
asio::awaitable<Result<SpawnSpec>> Jobs::container_spec(const JobRecord& job, ContainerRuntimeCli cli,
                                                        const Prepared& prepared) {
  const std::string& id = job.spec.id;
  auto exists_argv = image_exists_argv(cli, job.spec.image);
  auto exists = co_await run_tool(std::move(exists_argv), kToolTimeout);
  if (!exists) {
    if (job.spec.image_archive.empty())
      co_return Error{fmt::format("image {} is not present (no registry is used: load it first or give image_archive)",
                                  job.spec.image)};
    log_->info("job {}: loading image {} from {}", id, job.spec.image, job.spec.image_archive);
    auto load = load_argv(cli, job.spec.image_archive);
    auto loaded = co_await run_tool(std::move(load), kLoadTimeout);
    if (!loaded) co_return Error{fmt::format("cannot load {}: {}", job.spec.image_archive, loaded.error().message)};
  }
  // A container of that name left by an agent that died before recording it.
  auto rm_argv = remove_argv(cli, job.container);
  (void)co_await run_tool(std::move(rm_argv), kToolTimeout);
  RunOptions opt;
  opt.name = job.container;
  opt.gpus = job.gpus;
  opt.extra = config_.container_options;
  if (prepared.user.uid != 0) opt.user = std::make_pair(prepared.user.uid, prepared.user.gid);
  // An operator's container: no way back to root inside it (setuid files of the image,
  // capabilities), since its working folder is a host folder.
  if (job.owner_uid) opt.extra.insert(opt.extra.begin(), {"--security-opt", "no-new-privileges", "--cap-drop", "all"});
  // Values only in a root-only file, never on a command line.
  JobSpec with_marker = job.spec;
  with_marker.env["INSTANCED_JOB_ID"] = id;
  const fs::path env_file = store_file(id, ".env");
  if (auto w = api_.fs.write_file_atomic(env_file, env_file_text(with_marker), 0600); !w) co_return w.error();
  opt.env_file = env_file.string();
  SpawnSpec spec;
  spec.cwd = !job.spec.workdir.empty() ? job.spec.workdir : "/";
  spec.argv = run_argv(cli, job.spec, opt);
  spec.env = runtime_environment();
  spec.env.push_back("INSTANCED_JOB_ID=" + id);
  co_return spec;
}

// Spawns the job and opens its run log; the job is `running` (recorded) and told.
Result<void> Jobs::start_process(JobRecord& job, Live& live, const SpawnSpec& spec) {
  const std::string& id = job.spec.id;
  if (live.cancel) return Error{"cancelled before it started"};
  auto spawned = runner_.spawn(spec);
  // The log is made once the job runs (its output waits in the pipe meanwhile): making
  // a file costs about a millisecond on some disks, and the job need not wait for it.
  if (auto r = api_.fs.create_directories(config_.log_dir, 0750); !r) log_->warn("{}", r.error().message);
  live.log = std::make_unique<RunLog>(job.log, config_.max_log_bytes.bytes, static_cast<std::size_t>(config_.tail_lines),
                                      [this, who = id](std::string_view line) {
                                        api_.logging.workload_line(log_, spdlog::level::debug, "instanced-job",
                                                                   {"INSTANCED_JOB", who}, line);
                                      });
  if (!spawned) return spawned.error();
  live.proc = std::move(*spawned);
  job.state = JobState::running;
  (void)persist(job);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kJobStarted}, {"INSTANCED_JOB", id}};
    log_->info("job {} started (pid {}{}{})", id, live.proc->pid(), live.cli ? ", container " + job.container : "",
               job.gpus.empty() ? "" : fmt::format(", GPUs {}", fmt::join(job.gpus, ",")));
  }
  api_.state.emit("jobs", "job_started", fmt::format("job {} started", id), {{"id", id}, {"job", job.to_json()}});
  publish();
  return {};
}

// Until the job has ended and its output is read: how it ended.
asio::awaitable<Jobs::Ending> Jobs::watch(JobRecord& job, Live& live) {
  const std::string id = job.spec.id;
  ExitStatus status;
  {
    auto pump = pump_output(*live.proc, *live.log, live.pump_done);
    auto sup = supervise(job, live);
    auto both = std::move(pump) && std::move(sup);
    status = co_await first_error(std::move(both));
  }
  job.exit_code = status.signal ? std::nullopt : std::optional<int>(status.code);
  job.signal = status.signal;
  if (!live.cli) {
    auto left = co_await kill_marked(id);  // what it left behind ends with it
    if (!left.empty()) log_->info("job {}: {} processes it left behind were stopped", id, left.size());
  }
  if (live.cancel) co_return Ending{JobState::cancelled, live.cancel_reason};
  if (live.timed_out)
    co_return Ending{JobState::timed_out, fmt::format("timed out after {}; stopped",
                                                      format_duration(job.spec.timeout.value_or(config_.default_timeout)))};
  if (status.success()) co_return Ending{JobState::succeeded, {}};
  std::string reason = status.describe();
  if (live.cli && status.code >= 125 && status.code <= 127)
    reason += fmt::format(" (the container runtime could not run it: see 'instancectl job logs {}')", id);
  co_return Ending{JobState::failed, std::move(reason)};
}

// The run log closed (a job that never ran has none), then the outcome recorded and told.
void Jobs::conclude(JobRecord& job, Live& live, Ending end) {
  std::vector<std::string> tail;
  if (live.log) {
    if (!live.proc) live.log->feed("[instanced: " + end.reason + "]\n");
    job.layout = live.log->finish();
    tail = live.log->last_lines();
  } else {
    job.log.clear();  // it never ran: no output
  }
  // Recorded first, then the container goes: a crash between the two finds the outcome.
  finish(job, end.state, std::move(end.reason), std::move(tail));
}

// `rm --force` of a finished job's container; errors (and a stop meanwhile) only logged.
asio::awaitable<void> Jobs::remove_container(ContainerRuntimeCli cli, std::string name) {
  try {
    auto argv = remove_argv(cli, name);
    auto r = co_await run_tool(std::move(argv), kToolTimeout);
    if (!r) log_->warn("cannot remove container {}: {}", name, r.error().message);
  } catch (const boost::system::system_error&) {
    // The agent is stopping; the next start finds it exited and removes it.
  }
}

void Jobs::finish(JobRecord& job, JobState state, std::string reason, std::vector<std::string> tail) {
  job.state = state;
  job.reason = std::move(reason);
  job.ended = api_.clock.wall_now();
  (void)persist(job);
  std::error_code ec;
  fs::remove(store_file(job.spec.id, ".env"), ec);  // a container job's variables
  finished_[job.seq] = job.spec.id;
  const std::string id = job.spec.id;
  const std::string result(to_string(state));
  api_.state.metrics().add_counter("instanced_jobs_finished_total", "Jobs finished, by final state", {{"state", result}});
  std::string msg;
  if (state == JobState::succeeded)
    msg = fmt::format("job {} succeeded in {:.1f}s", id, seconds(job.ended - job.started));
  else
    msg = fmt::format("job {} {}: {}", id, result, job.reason);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kJobFinished}, {"INSTANCED_JOB", id}};
    if (state == JobState::succeeded || state == JobState::cancelled)
      log_->info("{}", msg);
    else
      log_->warn("{}{}", msg, job.log.empty() ? "" : " (log " + job.log + ")");
  }
  json::array tail_json;
  for (auto& l : tail) tail_json.emplace_back(l);
  api_.state.emit("jobs", "job_finished", msg, {{"id", id}, {"state", result}, {"job", job.to_json()}, {"tail", std::move(tail_json)}});
  prune();
}

// ---- after a restart ------------------------------------------------------------------------

// What the runtime says of a container: its state, nothing when there is no such
// container, or an error (the runtime did not answer, its storage is locked, ...).
asio::awaitable<Result<std::optional<InspectResult>>> Jobs::inspect(ContainerRuntimeCli cli, std::string name) {
  for (int attempt = 0;; ++attempt) {
    auto argv = inspect_argv(cli, name);
    auto out = co_await run_tool(std::move(argv), kToolTimeout);
    if (out) {
      auto seen = parse_inspect(*out);
      if (!seen) co_return Error{fmt::format("cannot read the runtime's answer about {}: '{}'", name, *out)};
      co_return seen;
    }
    std::string lower = out.error().message;
    for (char& c : lower) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (lower.find("no such") != std::string::npos) co_return std::optional<InspectResult>{};
    if (attempt == 2) co_return out.error();
    co_await api_.clock.sleep_for(1s);
  }
}

asio::awaitable<void> Jobs::recover() {
  std::vector<std::string> ids;
  for (const auto& [id, j] : jobs_)
    if (j->state == JobState::starting || j->state == JobState::running) ids.push_back(id);
  auto requeue = [this](JobRecord& job) {
    if (job.cancel_requested) {  // cancelled before the agent stopped: not run after all
      finish(job, JobState::cancelled, "cancelled before it started", {});
      return;
    }
    job.state = JobState::queued;
    job.gpus.clear();
    job.started = {};
    (void)persist(job);
    queue_[job.seq] = &job;
    log_->info("job {}: had not started when the agent stopped; queued again", job.spec.id);
  };
  for (const auto& id : ids) {
    JobRecord* job = jobs_.at(id).get();
    const bool was_running = job->state == JobState::running;
    if (!job->container.empty()) {
      auto cli = co_await runtime();
      if (!cli) {
        finish(*job, JobState::lost, cli.error().message, {});
        continue;
      }
      const ContainerRuntimeCli c = *cli;
      const std::string name = job->container;
      auto seen = co_await inspect(c, name);
      job = jobs_.at(id).get();
      if (!seen) {
        // Not known either way: never run it again (it may be running), never free its GPUs
        // on a guess. Reported; a person looks.
        finish(*job, JobState::lost, "the container runtime cannot say what became of it: " + seen.error().message, {});
        continue;
      }
      const std::optional<InspectResult>& st = *seen;
      if (st && (st->status == "running" || st->status == "paused")) {
        log_->info("job {}: container {} is still running; re-attached", id, name);
        job->state = JobState::running;
        auto& live = live_[id];
        live = std::make_unique<Live>(ex_);
        live->cli = c;
        spawn_supervisor(id, attach_container(id, c));
        continue;
      }
      if (st && (st->status == "exited" || st->status == "stopped")) {
        // It ended while the agent was away: its output and exit code are still there.
        auto logs = logs_argv(c, name, false);
        auto out = co_await run_tool(std::move(logs), kToolTimeout);
        job = jobs_.at(id).get();
        std::vector<std::string> tail;
        if (out) {
          RunLog log(job->log, config_.max_log_bytes.bytes, static_cast<std::size_t>(config_.tail_lines), [](std::string_view) {});
          log.feed(*out);
          job->layout = log.finish();
          tail = log.last_lines();
        }
        job->exit_code = st->exit_code;
        log_->info("job {}: its container ended while the agent was stopped (exit status {})", id, st->exit_code);
        finish(*job, st->exit_code == 0 ? JobState::succeeded : JobState::failed,
               st->exit_code == 0 ? "" : fmt::format("exit status {} (ended while the agent was stopped)", st->exit_code),
               std::move(tail));
        co_await remove_container(c, name);
        continue;
      }
      if (st) co_await remove_container(c, name);  // created, never started
      job = jobs_.at(id).get();
      if (!was_running)
        requeue(*job);
      else
        finish(*job, JobState::lost, "its container is gone (the agent was stopped while it ran)", {});
      continue;
    }
    std::vector<pid_t> left = co_await kill_marked(id);
    job = jobs_.at(id).get();
    if (!was_running && left.empty()) {
      requeue(*job);
      continue;
    }
    finish(*job, JobState::lost,
           left.empty() ? "the agent stopped while it ran"
                        : fmt::format("the agent stopped while it ran; {} of its processes were still running and were "
                                      "stopped", left.size()),
           {});
  }
}

// A container that outlived an agent restart: its output again from the start, and its end.
asio::awaitable<void> Jobs::attach_container(std::string id, ContainerRuntimeCli cli) {
  JobRecord& job = *jobs_.at(id);
  Live& live = *live_.at(id);
  std::string reason;
  JobState outcome = JobState::failed;
  std::vector<std::string> tail;
  try {
    live.log = std::make_unique<RunLog>(job.log, config_.max_log_bytes.bytes, static_cast<std::size_t>(config_.tail_lines),
                                        [](std::string_view) {});
    SpawnSpec logs;
    logs.argv = logs_argv(cli, job.container, true);
    logs.env = runtime_environment();
    auto spawned = runner_.spawn(logs);
    if (!spawned) throw std::runtime_error(spawned.error().message);
    live.proc = std::move(*spawned);
    if (job.cancel_requested) live.cancel = true, live.cancel_reason = "cancelled";
    // `logs --follow` ends when the container does; its exit code comes from inspect.
    ExitStatus ended;
    {
      auto pump = pump_output(*live.proc, *live.log, live.pump_done);
      auto sup = supervise(job, live);
      auto both = std::move(pump) && std::move(sup);
      ended = co_await first_error(std::move(both));
    }
    const std::string name = job.container;
    auto asked = co_await inspect(cli, name);
    // The log stream can end before the container does (a log driver it cannot read):
    // then its end is waited for by asking again.
    while (asked && *asked && ((*asked)->status == "running" || (*asked)->status == "paused")) {
      if (live.cancel || live.timed_out) {
        auto kill = kill_argv(cli, name, "KILL");
        (void)co_await run_tool(std::move(kill), kToolTimeout);
      }
      co_await api_.clock.sleep_for(1s);
      asked = co_await inspect(cli, name);
    }
    std::optional<InspectResult> seen = asked ? *asked : std::nullopt;
    if (seen) job.exit_code = seen->exit_code;
    if (live.cancel) {
      outcome = JobState::cancelled;
      reason = live.cancel_reason;
    } else if (live.timed_out) {
      outcome = JobState::timed_out;
      reason = "timed out; stopped";
    } else if (seen && seen->exit_code == 0) {
      outcome = JobState::succeeded;
    } else {
      reason = seen ? fmt::format("exit status {}", seen->exit_code)
                    : asked ? "its container is gone" : "the container runtime cannot say how it ended: " + asked.error().message;
    }
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) {
      if (live.log) live.log->finish();
      co_return;
    }
    reason = e.what();
  } catch (const std::exception& e) {
    reason = e.what();
  }
  if (live.log) {
    job.layout = live.log->finish();
    tail = live.log->last_lines();
  }
  finish(job, outcome, std::move(reason), std::move(tail));
  const std::string name = job.container;
  co_await remove_container(cli, name);
}

// ---- requests -----------------------------------------------------------------------------

Jobs::Submitted Jobs::submit(JobSpec spec, std::optional<unsigned> owner) {
  using K = Submitted::Kind;
  if (!config_.enabled) return {K::refused, {}, "the job queue is disabled (jobs.enabled: false)"};
  if (auto it = jobs_.find(spec.id); it != jobs_.end()) {
    const JobRecord& j = *it->second;
    if (!(j.spec == spec) || j.owner_uid != owner)
      return {K::conflict, {}, fmt::format("id: '{}' is already used by another job (submitted {})", spec.id, iso8601(j.submitted))};
    json::object o{{"id", spec.id}, {"state", to_string(j.state)}, {"duplicate", true}};
    if (j.state == JobState::queued) o["position"] = position(j);
    return {K::duplicate, std::move(o), {}};
  }
  if (api_.clock.now() < hold_until_)
    return {K::refused, {}, "the instance is preparing to stop (prepare_stop): no jobs are accepted for now"};
  if (queue_.size() >= static_cast<std::size_t>(config_.max_queued))
    return {K::refused, {}, fmt::format("the queue is full ({} jobs queued; jobs.max_queued)", queue_.size())};
  if (!spec.image.empty() && config_.runtime == ContainerRuntime::none)
    return {K::invalid, {}, "image: this agent runs no containers (jobs.runtime: none)"};
  if (spec.gpus.any() && gpus_)
    if (auto never = never_fits(spec.gpus, gpus_())) return {K::invalid, {}, std::move(*never)};
  auto job = std::make_unique<JobRecord>();
  job->spec = std::move(spec);
  job->owner_uid = owner;
  job->seq = next_seq_++;
  job->submitted = api_.clock.wall_now();
  JobRecord& j = *job;
  const std::string id = j.spec.id;
  const bool was_empty = queue_.empty();
  jobs_[id] = std::move(job);
  queue_[j.seq] = &j;
  // A job that can start at once is written once, as starting (start() writes it before
  // anything runs); one that waits is written as queued. Either way it is on disk before
  // the answer.
  if (was_empty) dispatch();
  if (j.state == JobState::queued) {
    if (auto r = persist(j); !r) {
      queue_.erase(j.seq);
      jobs_.erase(id);
      return {K::refused, {}, "cannot record the job: " + r.error().message};
    }
  }
  api_.state.metrics().add_counter("instanced_jobs_submitted_total", "Jobs accepted into the queue", {});
  poke();
  publish();
  if (j.state != JobState::queued) return {K::accepted, json::object{{"id", id}, {"state", to_string(j.state)}}, {}};
  // The newest job is the last one queued.
  return {K::accepted, json::object{{"id", id}, {"state", "queued"}, {"position", queue_.size()}}, {}};
}

Result<json::object> Jobs::cancel(const std::string& id) {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return Error{fmt::format("no job '{}'", id)};
  JobRecord& job = *it->second;
  if (is_finished(job.state)) return Error{fmt::format("job {} has already ended ({})", id, to_string(job.state))};
  if (job.state == JobState::queued) {
    queue_.erase(job.seq);
    finish(job, JobState::cancelled, "cancelled while queued", {});
    poke();
    publish();
    return json::object{{"id", id}, {"state", "cancelled"}};
  }
  auto l = live_.find(id);
  if (l == live_.end()) return Error{fmt::format("job {} is {} but not supervised", id, to_string(job.state))};
  l->second->cancel = true;
  l->second->cancel_reason = "cancelled while running";
  job.cancel_requested = true;
  (void)persist(job);
  l->second->poke.cancel();
  return json::object{{"id", id}, {"state", to_string(job.state)}, {"cancel", "requested"}};
}

std::size_t Jobs::position(const JobRecord& job) const {
  std::size_t n = 1;
  for (const auto& [seq, j] : queue_) {
    if (seq == job.seq) return n;
    ++n;
  }
  return 0;
}

std::optional<std::string> Jobs::waiting_reason(const JobRecord& job) const {
  if (!config_.enabled) return "the job queue is disabled (jobs.enabled: false)";
  if (store_error_) return "the job state cannot be written: " + *store_error_;
  if (Gate* g = closed_gate()) return "waiting for " + g->name();
  if (api_.clock.now() < hold_until_) return std::string("held: the instance is preparing to stop");
  if (job.spec.gpus.any()) {
    GpuView view = gpus_ ? gpus_() : GpuView{};
    if (!view.known) return std::string("waiting for the GPUs to be sampled");
    auto free = free_gpus(view);
    if (!gpus_fit(job.spec.gpus, view, free))
      return fmt::format("waiting for {} GPUs ({} free of {} healthy)",
                         job.spec.gpus.all ? std::string("all") : std::to_string(gpus_taken(job.spec.gpus, view)),
                         free.size(), view.usable.size());
  }
  if (free_slots() == 0) return fmt::format("waiting for a slot ({} of {} in use)", live_.size(), slots_);
  return std::nullopt;
}

// Returns when no job's supervisor is left (each end cancels live_changed_).
asio::awaitable<void> Jobs::until_no_live_jobs() {
  while (!live_.empty()) {
    boost::system::error_code ec;
    co_await live_changed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
}

asio::awaitable<Result<std::string>> Jobs::drain(std::string action) {
  hold_until_ = api_.clock.now() + config_.drain_hold;
  publish();
  if (live_.empty())
    co_return fmt::format("no job running; {} queued jobs wait for the next start", queue_.size());
  const std::size_t running = live_.size();
  const auto t0 = api_.clock.now();
  {
    auto ended = until_no_live_jobs();
    auto limit = api_.clock.sleep_for(config_.stop_wait);
    auto either = std::move(ended) || std::move(limit);
    co_await first_error(std::move(either));
  }
  std::vector<std::string> cancelled;
  for (auto& [id, live] : live_) {
    cancelled.push_back(id);
    live->cancel = true;
    live->cancel_reason = fmt::format("cancelled by {}: still running after jobs.stop_wait ({})", action,
                                      format_duration(config_.stop_wait));
    live->poke.cancel();
  }
  if (!cancelled.empty()) {
    auto ended = until_no_live_jobs();
    auto limit = api_.clock.sleep_for(config_.kill_grace * 3 + 5s);
    auto either = std::move(ended) || std::move(limit);
    co_await first_error(std::move(either));
  }
  std::string msg = fmt::format("waited {:.1f}s for {} running jobs", seconds(api_.clock.now() - t0), running);
  if (!cancelled.empty()) msg += fmt::format("; cancelled {}", fmt::join(cancelled, ", "));
  if (!live_.empty()) co_return Error{fmt::format("{} refused: jobs {} did not stop", action, fmt::format("{}", live_.begin()->first))};
  co_return msg;
}

// ---- views --------------------------------------------------------------------------------

std::optional<json::object> Jobs::job_json(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const JobRecord& j = *it->second;
  json::object o = j.to_json();
  if (j.state == JobState::queued) {
    o["position"] = position(j);
    if (auto w = waiting_reason(j)) o["waiting"] = *w;
  }
  if (auto l = live_.find(id); l != live_.end() && l->second->log) o["output_bytes"] = l->second->log->produced();
  return o;
}

json::object Jobs::status_json(std::size_t max_queued_shown, std::size_t max_finished_shown) const {
  json::array running, queued, finished;
  for (const auto& [id, live] : live_) {
    json::object o = jobs_.at(id)->to_json();
    if (live->log) o["output_bytes"] = live->log->produced();
    running.push_back(std::move(o));
  }
  std::size_t pos = 0;
  bool gpu_blocked = false;
  for (const auto& [seq, j] : queue_) {
    if (++pos > max_queued_shown) break;
    json::object o{{"id", j->spec.id}, {"position", pos}, {"submitted", iso8601(j->submitted)}};
    if (!j->spec.image.empty()) o["image"] = j->spec.image;
    json::array cmd;
    for (const auto& a : j->spec.command) cmd.emplace_back(a);
    o["command"] = std::move(cmd);
    if (j->spec.gpus.any()) o["gpus"] = j->spec.gpus.all ? json::value("all") : json::value(j->spec.gpus.count);
    auto w = waiting_reason(*j);
    if (j->spec.gpus.any() && gpu_blocked && !w) w = "waiting behind an earlier GPU job";
    if (j->spec.gpus.any() && w) gpu_blocked = true;
    if (w) o["waiting"] = *w;
    queued.push_back(std::move(o));
  }
  for (auto it = finished_.rbegin(); it != finished_.rend() && finished.size() < max_finished_shown; ++it)
    if (auto j = jobs_.find(it->second); j != jobs_.end()) finished.push_back(j->second->to_json());
  json::object out{{"enabled", config_.enabled},
                   {"slots", slots_},
                   {"running_count", live_.size()},
                   {"queued_count", queue_.size()},
                   {"finished_count", finished_.size()},
                   {"accepting", config_.enabled && api_.clock.now() >= hold_until_},
                   {"running", std::move(running)},
                   {"queued", std::move(queued)},
                   {"finished", std::move(finished)}};
  if (store_error_) out["error"] = *store_error_;
  return out;
}

void Jobs::publish() {
  auto& m = api_.state.metrics();
  m.set_gauge("instanced_jobs_queued", "Jobs waiting in the queue", {}, static_cast<double>(queue_.size()));
  m.set_gauge("instanced_jobs_running", "Jobs starting or running", {}, static_cast<double>(live_.size()));
  m.set_gauge("instanced_jobs_slots", "Jobs that may run at once", {}, static_cast<double>(slots_));
  m.sample("instanced_jobs_started_total", "Jobs started", Metrics::Type::counter) = static_cast<double>(started_total_);
  m.sample("instanced_jobs_wait_seconds_total", "Seconds that started jobs waited in the queue, summed",
           Metrics::Type::counter) = wait_seconds_total_;
  Health h = Health::ok;
  std::string summary;
  if (!config_.enabled) {
    summary = "disabled";
  } else if (store_error_) {
    h = Health::degraded;
    summary = "the job state cannot be written: " + *store_error_;
  } else {
    summary = fmt::format("{} of {} slots in use, {} queued", live_.size(), slots_, queue_.size());
    if (!queue_.empty())
      if (auto w = waiting_reason(*queue_.begin()->second)) summary += " (" + *w + ")";
  }
  api_.state.publish("jobs", h, summary,
                     {{"slots", slots_}, {"running", live_.size()}, {"queued", queue_.size()}});
  api_.state.set_heartbeat_summary("jobs", fmt::format("{{\"r\":{},\"q\":{}}}", live_.size(), queue_.size()));
}

void Jobs::add_routes(status::Router& router) {
  using S = status::http::status;
  router.add(status::http::verb::get, "/v1/jobs", [this](const status::Request&) {
    return status::json_response(S::ok, json::serialize(status_json()));
  });
  router.add(status::http::verb::post, "/v1/jobs", [this](const status::Request& req) { return submit_response(req); });
  router.add(status::http::verb::get, "/v1/jobs/job", [this](const status::Request& req) {
    auto id = status::query_param(req, "id");
    if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
    auto j = job_json(*id);
    if (!j) return status::error_response(S::not_found, fmt::format("no job '{}'", *id));
    return status::json_response(S::ok, json::serialize(*j));
  });
  router.add(status::http::verb::get, "/v1/jobs/log", [this](const status::Request& req) { return log_response(req); });
  router.add(status::http::verb::post, "/v1/jobs/cancel", [this](const status::Request& req) {
    auto id = status::query_param(req, "id");
    if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
    auto r = cancel(*id);
    if (!r) return status::error_response(jobs_.contains(*id) ? S::conflict : S::not_found, r.error().message);
    return status::json_response(S::ok, json::serialize(*r));
  });
}

status::Response Jobs::submit_response(const status::Request& req) {
  using S = status::http::status;
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 16;
  auto v = json::parse(req.body(), ec, {}, opt);
  if (ec || !v.is_object()) return status::error_response(S::bad_request, "the body must be a job as a JSON object (docs/jobs.md)");
  auto spec = parse_job_spec(v.as_object(), config_);
  if (!spec) return status::error_response(S::bad_request, spec.error().message);
  std::optional<unsigned> owner;
  if (auto uid = req[status::kPeerUidHeader]; !uid.empty() && uid != "0") {
    unsigned n = 0;
    auto [p, ec2] = std::from_chars(uid.data(), uid.data() + uid.size(), n);
    if (ec2 != std::errc()) return status::error_response(S::forbidden, "the caller's uid is unknown");
    if (!spec->user.empty())
      return status::error_response(S::forbidden, "user: only root may choose the user of a job; an operator's jobs "
                                                  "run as the operator");
    // Root loads the archive: it could retag an image that root's jobs run.
    if (!spec->image_archive.empty())
      return status::error_response(S::forbidden, "image_archive: only root may load images for jobs");
    owner = n;
  }
  auto r = submit(std::move(*spec), owner);
  switch (r.kind) {
    case Submitted::Kind::accepted: return status::json_response(S::accepted, json::serialize(r.job));
    case Submitted::Kind::duplicate: return status::json_response(S::ok, json::serialize(r.job));
    case Submitted::Kind::invalid: return status::error_response(S::bad_request, r.error);
    case Submitted::Kind::conflict: return status::error_response(S::conflict, r.error);
    case Submitted::Kind::refused: break;
  }
  return status::error_response(S::service_unavailable, r.error);
}

status::Response Jobs::log_response(const status::Request& req) const {
  using S = status::http::status;
  auto id = status::query_param(req, "id");
  if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
  auto offset = status::offset_param(req, "from");
  if (!offset) return status::error_response(S::bad_request, "from: not a byte offset");
  const std::uint64_t from = *offset;
  auto it = jobs_.find(*id);
  if (it == jobs_.end()) return status::error_response(S::not_found, fmt::format("no job '{}'", *id));
  const JobRecord& j = *it->second;
  constexpr std::size_t kChunk = 1 << 20;
  LogChunk chunk;
  bool running = false;
  if (auto l = live_.find(*id); l != live_.end() && l->second->log) {
    chunk = l->second->log->read(from, kChunk);
    running = true;
  } else if (j.state == JobState::queued || j.state == JobState::starting || (l != live_.end())) {
    running = !is_finished(j.state);
  } else if (!j.log.empty()) {
    chunk = read_finished_log(j.log, j.layout, from, kChunk);
  }
  if (chunk.next == 0) chunk.next = from;
  auto res = status::log_chunk_response(std::move(chunk), running);
  res.set("X-Instanced-State", std::string(to_string(j.state)));
  return res;
}

}  // namespace instanced::jobs
