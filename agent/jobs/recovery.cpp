// After a restart: the jobs that were running, taken back or reported.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

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
    queue_.add(job);
    log_->info("job {}: had not started when the agent stopped; queued again", job.spec.id);
  };
  for (const auto& id : ids) {
    JobRecord* job = jobs_.at(id).get();
    const bool was_running = job->state == JobState::running;
    if (co_await recover_monitored(id)) continue;
    job = jobs_.at(id).get();
    if (!job->container.empty()) {
      auto cli = co_await runtime();
      if (!cli) {
        finish(*job, JobState::lost, cli.error().message, {});
        continue;
      }
      const ContainerRuntimeCli& c = *cli;
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
  live.log = std::make_unique<RunLog>(job.log, config_.max_log_bytes.bytes, static_cast<std::size_t>(config_.tail_lines),
                                      [](std::string_view) {});
  Ending end;
  try {
    end = co_await follow_container(job, live, cli);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) {
      live.log->finish();
      co_return;
    }
    end.reason = e.code().message();
  } catch (const std::exception& e) {  // a defect; the job still gets its end
    end.reason = e.what();
  }
  job.layout = live.log->finish();
  finish(job, end.state, std::move(end.reason), live.log->last_lines());
  const std::string name = job.container;
  co_await remove_container(cli, name);
}

// Follows the container's log to its end, then asks the runtime how it ended.
asio::awaitable<Jobs::Ending> Jobs::follow_container(JobRecord& job, Live& live, const ContainerRuntimeCli& cli) {
  SpawnSpec logs;
  logs.argv = logs_argv(cli, job.container, true);
  logs.env = runtime_environment();
  auto spawned = runner_.spawn(logs);
  if (!spawned) co_return Ending{JobState::failed, spawned.error().message};
  live.proc = std::move(*spawned);
  if (job.cancel_requested) live.cancel = true, live.cancel_reason = "cancelled";
  // `logs --follow` ends when the container does; its exit code comes from inspect.
  {
    auto pump = pump_output(*live.proc, *live.log, live.pump_done);
    auto sup = supervise(job, live);
    auto both = std::move(pump) && std::move(sup);
    co_await first_error(std::move(both));
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
  if (live.cancel) co_return Ending{JobState::cancelled, live.cancel_reason};
  if (live.timed_out) co_return Ending{JobState::timed_out, "timed out; stopped"};
  if (seen && seen->exit_code == 0) co_return Ending{JobState::succeeded, ""};
  co_return Ending{JobState::failed, seen    ? fmt::format("exit status {}", seen->exit_code)
                                     : asked ? "its container is gone"
                                             : "the container runtime cannot say how it ended: " + asked.error().message};
}

}  // namespace instanced::jobs
