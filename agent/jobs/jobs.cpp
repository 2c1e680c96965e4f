// The job queue: its life (run, reconfigure), dispatch and the requests it answers.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

Jobs::Jobs(asio::any_io_executor ex, Api& api, ProcessRunner& runner, const JobsConfig& config, std::string state_dir,
           std::string status_socket, GpuSource gpus, monitor::Launcher monitors)
    : ex_(ex),
      api_(api),
      runner_(runner),
      config_(config),
      state_dir_(std::move(state_dir)),
      status_socket_(std::move(status_socket)),
      gpus_(std::move(gpus)),
      monitors_(std::move(monitors)),
      log_(api.logging.get("jobs")),
      wake_(ex),
      live_changed_(ex),
      tool_done_(ex),
      journal_(api.fs, std::filesystem::path(state_dir_) / "jobs" / "journal"),
      journal_turn_(ex) {
  reconfigure(config);
  load();
}

Jobs::~Jobs() { (void)journal_.commit(); }

void Jobs::reconfigure(const JobsConfig& config) {
  config_ = config;
  long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  slots_ = config_.slots > 0 ? static_cast<std::size_t>(config_.slots) : static_cast<std::size_t>(std::max(1L, cpus) * 2);
  if (auto unapplied = limits_needing_systemd(config_); !unapplied.empty() && monitors_.systemd_run.empty())
    log_->warn("{}: not applied to process jobs: they are enforced by each job's systemd unit, and the agent does not "
               "run under systemd (container jobs get them from the container runtime)",
               fmt::join(unapplied, ", "));
  poke();
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
      auto until = Clock::steady_time::max();
      auto now = api_.clock.now();
      if (gpu_blocked_) until = now + kGpuRecheck;  // GPUs may turn healthy or free up
      if (store_error_) until = std::min(until, now + kStoreRetry);
      if (now < hold_until_) until = std::min(until, hold_until_);
      Gate* closed = closed_gate();
      if (closed && !queue_.empty()) {
        // Queued jobs start when the gate opens (the disk's first look, setup done).
        auto opened = closed->wait();
        auto woken = wake_.sleep_until(api_.clock, until);
        auto either = std::move(opened) || std::move(woken);
        co_await first_error(std::move(either));
      } else {
        co_await wake_.sleep_until(api_.clock, until);
      }
    }
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) throw;
  }
  // Stopping: running jobs are left as they are, under their monitors or the container
  // runtime, and taken back at the next start; their coroutines end now.
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
  const std::size_t slots = free_slots();
  if (slots == 0) return;  // the plan would start nothing (bench/jobs: 10,000 queued, every slot busy)
  GpuView view = gpus_ ? gpus_() : GpuView{};
  const std::pair<bool, std::size_t> seen{view.known, view.total};
  QueueWalk walk(queue_, walked_view_ == seen);
  DispatchPlan plan = plan_dispatch(walk, slots, view, free_gpus(view));
  if (walk.saw_every_job()) walked_view_ = seen;
  gpu_blocked_ = plan.gpu_blocked;
  for (auto& n : plan.never) {
    // Submitted before the GPUs were known: it can never run here.
    JobRecord& job = *jobs_.at(n.id);
    queue_.remove(job.seq);
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
  // Written before anything runs, so that the agent finds it after a crash of its own; a
  // job that has no line yet (a new one) starts while the line is synced (start_monitored).
  const bool first_record = !journal_.has(job.spec.id);
  if (!persist(job)) {
    job = before;
    return;
  }
  queue_.remove(job.seq);
  ++started_total_;
  wait_seconds_total_ += seconds(job.started - job.submitted);
  auto& live = live_[job.spec.id];
  live = std::make_unique<Live>(ex_);
  live->first_record = first_record;
  spawn_supervisor(job.spec.id, run_job(job.spec.id));
}

// The job's coroutine, stopped through its Live's signal when the agent stops.
void Jobs::spawn_supervisor(const std::string& id, asio::awaitable<void> work) {
  // The Live (and the cancellation signal co_spawn is bound to) goes once the coroutine
  // has completed, from a handler of its own: never from inside the coroutine.
  auto done = [this, id](std::exception_ptr e) {
    if (e && !is_cancellation(e)) log_->error("job {}: {}", id, describe(e));
    asio::post(ex_, [this, id] {
      live_.erase(id);
      live_changed_.pulse();
      poke();
      publish();
    });
  };
  asio::co_spawn(ex_, std::move(work), asio::bind_cancellation_slot(live_.at(id)->stop.slot(), done));
}

// ---- requests -----------------------------------------------------------------------------

// The answer waits for the record to be durable: an accepted job is never lost. A job that
// can start at once is already starting meanwhile (start_monitored: its first record is
// being synced while its monitor starts it).
asio::awaitable<Jobs::Submitted> Jobs::submit(JobSpec spec, std::optional<unsigned> owner) {
  using K = Submitted::Kind;
  const std::string id = spec.id;
  Submitted answer = enqueue(std::move(spec), owner);
  if (!answer.ok()) co_return answer;
  if (auto recorded = co_await durable(); !recorded) {
    // Still queued (not started meanwhile): taken back. One that started is stopped by its
    // own wait for the record (start_monitored) and says why.
    auto it = jobs_.find(id);
    if (it != jobs_.end() && it->second->state == JobState::queued && answer.kind == K::accepted) {
      queue_.remove(it->second->seq);
      jobs_.erase(it);
      (void)journal_.forget(id);  // its line may reach the disk with a later sync
    }
    co_return Submitted{K::refused, {}, "cannot record the job: " + recorded.error().message};
  }
  co_return answer;
}

// Checks a submission and takes it in: queued, or starting when it can start at once; its
// record appended (not yet durable).
Jobs::Submitted Jobs::enqueue(JobSpec spec, std::optional<unsigned> owner) {
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
  queue_.add(j);
  // A job that can start at once is written once, as starting (start() writes it before
  // anything runs); one that waits is written as queued. Either way it is on disk before
  // the answer.
  if (was_empty) dispatch();
  Result<void> recorded = j.state == JobState::queued ? persist(j) : Result<void>{};
  if (!recorded) {
    queue_.remove(j.seq);
    jobs_.erase(id);
    return {K::refused, {}, "cannot record the job: " + recorded.error().message};
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
    queue_.remove(job.seq);
    finish(job, JobState::cancelled, "cancelled while queued", {});
    poke();
    publish();
    return json::object{{"id", id}, {"state", "cancelled"}};
  }
  auto l = live_.find(id);
  if (l == live_.end() && !recovered_) {
    // Right after a start, before the job is taken back: recorded, and acted on when it is.
    job.cancel_requested = true;
    (void)persist(job);
    return json::object{{"id", id}, {"state", to_string(job.state)}, {"cancel", "requested"}};
  }
  if (l == live_.end()) return Error{fmt::format("job {} is {} but not supervised", id, to_string(job.state))};
  l->second->cancel = true;
  l->second->cancel_reason = "cancelled while running";
  job.cancel_requested = true;
  (void)persist(job);
  l->second->poke.pulse();
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

// Returns when no job's supervisor is left (each end pulses live_changed_).
asio::awaitable<void> Jobs::until_no_live_jobs() {
  while (!live_.empty()) co_await live_changed_.wait();
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
    live->poke.pulse();
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

}  // namespace instanced::jobs
