// One job: what to spawn, its run, its supervision (timeout, cancel, kill grace), its end.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

// ---- one job ------------------------------------------------------------------------------

std::vector<std::string> Jobs::environment(const JobRecord& job, const UserIdentity& user) const {
  std::map<std::string, std::string> env = login_environment(user);
  for (const auto& [k, v] : job.spec.env) env[k] = v;
  env["INSTANCED_JOB_ID"] = job.spec.id;
  // The marker its processes are found by: unique to this agent's state folder, so that
  // another agent's job of the same id (a test beside it) is never taken for it.
  env["INSTANCED_JOB_RUN"] = store_file(job.spec.id, ".run").string();
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

// Runs a short container CLI command to its end (at most kMaxTools at once); its output,
// or an error with its last line.
asio::awaitable<Result<std::string>> Jobs::run_tool(std::vector<std::string> argv, Duration timeout) {
  while (tools_running_ >= kMaxTools) co_await tool_done_.wait();
  ++tools_running_;
  struct Done {
    Jobs& jobs;
    ~Done() {
      --jobs.tools_running_;
      jobs.tool_done_.pulse();
    }
  } done{*this};
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

std::string Jobs::timed_out_reason(const JobRecord& job) const {
  return fmt::format("timed out after {}; stopped", format_duration(job.spec.timeout.value_or(config_.default_timeout)));
}

std::string Jobs::marker(const std::string& id) const { return "INSTANCED_JOB_RUN=" + store_file(id, ".run").string(); }

// Stops what carries the job's marker (SIGTERM, SIGKILL after kill_grace).
asio::awaitable<std::vector<pid_t>> Jobs::kill_marked(std::string id) {
  const std::string marker = this->marker(id);
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
    auto poked = live.poke.wait();
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
    Result<void> started = !spec ? Result<void>(spec.error()) : Result<void>();
    if (spec) started = co_await start_monitored(job, live, std::move(*spec));
    if (!started)
      end.reason = started.error().message;
    else
      end = co_await watch_monitored(job, live);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) {
      // The agent is stopping: the record stays as it is (running); the next start
      // takes the job back from its monitor.
      (void)persist(job);
      co_return;
    }
    end.reason = e.what();
  } catch (const std::exception& e) {
    end.reason = e.what();
  }
  if (end.state != JobState::succeeded && live.cancel) end = Ending{JobState::cancelled, live.cancel_reason};
  conclude(job, live, std::move(end));
  if (live.run) remove_run_folder(id);
  // Its container, also one a cancel or a timeout left running (the monitor stops `run`,
  // which passes the signal on, but SIGKILL reaches only `run` itself).
  if (live.cli && live.run) {
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
  // Under systemd the limits are the unit's (start_monitored).
  if (monitors_.systemd_run.empty())
    apply_process_limits(config_, effective_cpu_weight(job.spec.cpu_weight, job.owner_uid.has_value()), spec);
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
  opt.extra = container_limit_options(config_);
  opt.extra.insert(opt.extra.end(), config_.container_options.begin(), config_.container_options.end());
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

void Jobs::mark_running(JobRecord& job, Live& live, pid_t pid) {
  const std::string& id = job.spec.id;
  job.state = JobState::running;
  (void)persist(job);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kJobStarted}, {"INSTANCED_JOB", id}};
    const std::string who = !live.run                ? fmt::format("pid {}", pid)
                            : live.run->unit().empty() ? fmt::format("monitor pid {}", pid)
                                                       : "monitor unit " + live.run->unit();
    log_->info("job {} started ({}{}{})", id, who, live.cli ? ", container " + job.container : "",
               job.gpus.empty() ? "" : fmt::format(", GPUs {}", fmt::join(job.gpus, ",")));
  }
  api_.state.emit("jobs", "job_started", fmt::format("job {} started", id), {{"id", id}, {"job", job.to_json()}});
  publish();
}

// The outcome recorded and told, with the tail of the monitor's record (a job that never
// ran has no output).
void Jobs::conclude(JobRecord& job, Live& live, Ending end) {
  if (!live.run) job.log.clear();
  // Recorded first, then the container goes: a crash between the two finds the outcome.
  finish(job, end.state, std::move(end.reason), std::move(live.tail));
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

}  // namespace instanced::jobs
