// Jobs under their monitor (instanced-run, docs/monitor.md): started, watched, cancelled,
// and taken back after an agent restart. The monitor holds the job's output and records
// its end, so the job outlives the agent; a container job's monitor runs the container
// runtime's `run`, so that even its CLI is out of the agent's control group.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

namespace {
constexpr auto kFindTimeout = 10s;  // reading a run folder and /proc after a restart
}  // namespace

void Jobs::remove_run_folder(const std::string& id) {
  std::error_code ec;
  fs::remove_all(store_file(id, ".run"), ec);  // its spec holds the job's variables
}

// Writes the job's spec into its run folder and starts its monitor; the job is `running`.
asio::awaitable<Result<void>> Jobs::start_monitored(JobRecord& job, Live& live, SpawnSpec spec) {
  if (live.cancel) co_return Error{"cancelled before it started"};
  // A job that was queued on disk starts once its `starting` line is durable: after a crash
  // of the machine it is found lost, never run twice. A new job starts while its first line
  // is synced: a crash of the machine before the sync ends takes the job with it, and its
  // submission was not yet answered (submit() waits for the same sync).
  if (!live.first_record)
    if (auto r = co_await durable(); !r) co_return Error{"cannot record the job before it starts: " + r.error().message};
  monitor::WorkloadSpec w;
  w.name = "job " + job.spec.id;
  w.spawn = std::move(spec);
  w.timeout = job.spec.timeout.value_or(config_.default_timeout);
  w.kill_grace = config_.kill_grace;
  w.started = job.started;
  w.log_file = job.log;
  w.max_log_bytes = config_.max_log_bytes.bytes;
  w.tail_lines = static_cast<std::size_t>(config_.tail_lines);
  w.journal = api_.logging.journald();
  // The output's lines go to the journal at the debug level, as the agent's own would.
  if (api_.logging.level() == LogLevel::debug) w.journal_identifier = "instanced-job";
  w.journal_field = "INSTANCED_JOB";
  w.journal_value = job.spec.id;
  w.marker = marker(job.spec.id);
  if (auto r = api_.fs.create_directories(config_.log_dir, 0750); !r) log_->warn("{}", r.error().message);
  const fs::path dir = store_file(job.spec.id, ".run");
  const std::string unit = "instanced-job-" + job.spec.id + ".service";
  monitor::Launcher launcher = monitors_;
  launcher.properties = unit_properties(
      config_, effective_cpu_weight(job.spec.cpu_weight, job.owner_uid.has_value()), monitors_.cgroup_unified);
  auto run = co_await monitor::Run::launch(runner_, api_.fs, api_.clock, launcher, dir, unit, std::move(w));
  if (!run) co_return run.error();
  live.run = std::move(*run);
  mark_running(job, live, live.run->pid());
  if (live.first_record) {
    if (auto r = co_await durable(); !r) {  // not kept running unrecorded: stopped, and says why
      live.cancel = true;
      live.cancel_reason = "stopped: its record could not be written to disk (" + r.error().message + ")";
    }
  }
  co_return Result<void>{};
}

// Until the monitor has ended (a cancel asked for is passed on to it): how the job ended.
asio::awaitable<Jobs::Ending> Jobs::watch_monitored(JobRecord& job, Live& live) {
  for (;;) {
    if (live.cancel && !live.cancel_sent) {
      log_->info("job {}: stopping it ({})", job.spec.id, live.cancel_reason);
      live.run->cancel(api_.fs);
      live.cancel_sent = true;
    }
    auto ended = live.run->ended(ex_, api_.clock, api_.fs);
    auto poked = live.poke.wait();
    auto either = std::move(ended) || std::move(poked);
    if ((co_await first_error(std::move(either))).index() == 0) break;
  }
  auto record = live.run->exit_record(api_.fs);
  if (!record) {
    auto left = co_await kill_marked(job.spec.id);
    co_return Ending{JobState::lost, left.empty() ? record.error().message
                                                  : fmt::format("{}; {} of its processes were stopped",
                                                                record.error().message, left.size())};
  }
  live.tail = record->tail;
  co_return ending_of(job, live.cancel_reason, *record);
}

Jobs::Ending Jobs::ending_of(JobRecord& job, const std::string& cancel_reason, const monitor::WorkloadExit& e) const {
  using monitor::Outcome;
  job.layout = e.layout;
  if (e.outcome == Outcome::not_started) return Ending{JobState::failed, e.reason};
  job.exit_code = e.status.signal ? std::nullopt : std::optional<int>(e.status.code);
  job.signal = e.status.signal;
  if (!e.left_behind.empty())
    log_->info("job {}: {} processes it left behind were stopped", job.spec.id, e.left_behind.size());
  switch (e.outcome) {
    case Outcome::cancelled:
      return Ending{JobState::cancelled, cancel_reason.empty() ? "cancelled" : cancel_reason};
    case Outcome::timed_out:
      return Ending{JobState::timed_out, timed_out_reason(job)};
    default:
      break;
  }
  if (e.out_of_memory && e.status.signal == SIGKILL)
    return Ending{JobState::failed, "out of memory: the kernel killed it at its memory limit (jobs.memory_limit)"};
  if (e.status.success()) return Ending{JobState::succeeded, {}};
  if (e.out_of_memory)
    return Ending{JobState::failed, e.status.describe() + " (the kernel killed a process of it at its memory limit)"};
  if (!job.container.empty() && e.status.code >= 125 && e.status.code <= 127)
    return Ending{JobState::failed, fmt::format("{} (the container runtime could not run it: see 'instancectl job logs {}')",
                                                e.status.describe(), job.spec.id)};
  return Ending{JobState::failed, e.status.describe()};
}

// After a restart: a job that was running, from its run folder. False when there is none
// (a job started by an agent before monitors), or when a container job's monitor is gone
// without a record (its container may still run): the caller looks as before.
asio::awaitable<bool> Jobs::recover_monitored(const std::string& id) {
  const fs::path dir = store_file(id, ".run");
  std::error_code ec;
  if (!fs::exists(dir, ec)) co_return false;
  auto look = [this, dir] { return monitor::Run::find(api_.fs, dir); };
  const std::string what = "reading job " + id + "'s run folder";
  auto found = co_await api_.pool.run(what, kFindTimeout, look);
  JobRecord& job = *jobs_.at(id);
  if (!found) {
    finish(job, JobState::lost, found.error().message, {});
    co_return true;
  }
  if (auto* run = std::get_if<monitor::Run>(&*found)) {
    log_->info("job {}: still running under its monitor (pid {}); taken back", id, run->pid());
    job.state = JobState::running;
    auto& live = live_[id];
    live = std::make_unique<Live>(ex_);
    live->run = std::move(*run);
    if (job.cancel_requested) live->cancel = true, live->cancel_reason = "cancelled while running";
    spawn_supervisor(id, adopt_monitored(id));
    co_return true;
  }
  if (auto* gone = std::get_if<monitor::Run::Gone>(&*found)) {
    if (!job.container.empty()) {  // its container may still run: the runtime says
      log_->info("job {}: {}; asking the container runtime", id, gone->reason);
      remove_run_folder(id);
      co_return false;
    }
    auto left = co_await kill_marked(id);
    finish(*jobs_.at(id), JobState::lost,
           left.empty() ? gone->reason : fmt::format("{}; {} of its processes were still running and were stopped",
                                                     gone->reason, left.size()),
           {});
    remove_run_folder(id);
    co_return true;
  }
  // It ended while the agent was away: its end as the monitor recorded it.
  const auto& record = std::get<monitor::WorkloadExit>(*found);
  Ending end = ending_of(job, job.cancel_requested ? "cancelled while running" : "", record);
  log_->info("job {}: ended while the agent was stopped", id);
  finish(job, end.state, std::move(end.reason), record.tail);
  remove_run_folder(id);
  co_await remove_job_container(*jobs_.at(id));
  co_return true;
}

// A container job's container once its end is recorded (none for a process job).
asio::awaitable<void> Jobs::remove_job_container(const JobRecord& job) {
  if (job.container.empty()) co_return;
  const std::string name = job.container;
  auto cli = co_await runtime();
  if (!cli) {
    log_->warn("cannot remove container {}: {}", name, cli.error().message);
    co_return;
  }
  const ContainerRuntimeCli& c = *cli;
  co_await remove_container(c, name);
}

// A job taken back: watched to its end as if this agent had started it.
asio::awaitable<void> Jobs::adopt_monitored(std::string id) {
  JobRecord& job = *jobs_.at(id);
  Live& live = *live_.at(id);
  Ending end;
  try {
    end = co_await watch_monitored(job, live);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) co_return;  // stopping again: taken back at the next start
    end = Ending{JobState::lost, e.what()};
  }
  finish(job, end.state, std::move(end.reason), std::move(live.tail));
  remove_run_folder(id);
  co_await remove_job_container(job);
}

}  // namespace instanced::jobs
