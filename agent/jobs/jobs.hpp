// The job queue (docs/jobs.md): jobs arrive from the control plane (`submit_job`) and
// from operators (`instancectl job submit`), wait in a FIFO queue and run at most
// `jobs.slots` at once (two per CPU by default), each as a process in its own session and
// process group or as a container through podman's or docker's CLI. A job that wants GPUs
// waits until that many healthy GPUs are free and holds them alone. Nothing starts while
// a prerequisite gate is closed (the disk's 5 GB rule, required mounts, setup scripts).
// Every job is a file in state_dir/jobs, written before each change takes effect: queued
// jobs survive a restart. A process job runs under its own monitor (instanced-run, its
// run folder state_dir/jobs/ID.run), so it outlives an agent stop, crash or upgrade and is
// taken back at the next start; a container still running is re-attached.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "agent/jobs/container.hpp"
#include "agent/jobs/dispatch.hpp"
#include "agent/jobs/queue.hpp"
#include "agent/jobs/journal.hpp"
#include "agent/jobs/spec.hpp"
#include "agent/monitor/client.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/gate.hpp"
#include "common/process.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::jobs {

// The GPUs as the GPU subsystem sees them now.
using GpuSource = std::function<GpuView()>;

class Jobs final : public Subsystem {
 public:
  // `monitors`: how process jobs' monitors (instanced-run) are started.
  Jobs(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, const JobsConfig& config, std::string state_dir,
       std::string status_socket, GpuSource gpus, monitor::Launcher monitors);
  ~Jobs() override;

  std::string name() const override { return "jobs"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `jobs` section.
  void reconfigure(const JobsConfig& config);

  // No job starts while a prerequisite is closed; the queue shows which one it waits for.
  void add_prerequisite(Gate& gate) { prerequisites_.push_back(&gate); }

  // Queues a job. The same id again with the same spec answers with the job as it is (not
  // queued twice); with another spec it is refused. The answer: id, state, position.
  struct Submitted {
    enum class Kind { accepted, duplicate, invalid, conflict, refused };
    Kind kind = Kind::accepted;
    boost::json::object job;  // accepted, duplicate: id, state, position
    std::string error;
    bool ok() const { return kind == Kind::accepted || kind == Kind::duplicate; }
  };
  // `owner`: an operator's uid (not root's) when submitted through the status socket.
  // Answered once the job's record is durable (a job that can start at once is already
  // starting meanwhile).
  boost::asio::awaitable<Submitted> submit(JobSpec spec, std::optional<unsigned> owner = std::nullopt);
  // Cancels a queued job at once, a running one by stopping it (SIGTERM, then SIGKILL
  // after jobs.kill_grace). Finished jobs: an error.
  Result<boost::json::object> cancel(const std::string& id);
  // A job's record as JSON, or nothing.
  std::optional<boost::json::object> job_json(const std::string& id) const;

  // Before the VM stops or restarts: no job starts for jobs.drain_hold; running jobs are
  // given jobs.stop_wait to end, then cancelled (their results reported). Queued jobs stay
  // queued for after the restart.
  boost::asio::awaitable<Result<std::string>> drain(std::string action);

  // Slots (the configured number, or two per online CPU).
  std::size_t slots() const { return slots_; }
  std::size_t queued() const { return queue_.size(); }
  std::size_t running() const { return live_.size(); }

  boost::json::object status_json(std::size_t max_queued_shown = 100, std::size_t max_finished_shown = 20) const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  boost::asio::awaitable<void> until_no_live_jobs();  // returns when no supervisor is left
  struct Live;

  void load();
  boost::asio::awaitable<void> recover();
  void dispatch();
  void start(JobRecord& job, std::vector<unsigned> gpus);
  void spawn_supervisor(const std::string& id, boost::asio::awaitable<void> work);
  boost::asio::awaitable<void> run_job(std::string id);
  struct Prepared {
    UserIdentity user;
    std::string program;  // resolved on the job's PATH (process jobs)
  };
  struct Ending {
    JobState state = JobState::failed;
    std::string reason;
  };
  boost::asio::awaitable<Result<Prepared>> prepare(const JobRecord& job);
  boost::asio::awaitable<Result<SpawnSpec>> spawn_spec(JobRecord& job, Live& live);
  SpawnSpec process_spec(const JobRecord& job, const Prepared& prepared) const;
  boost::asio::awaitable<Result<SpawnSpec>> container_spec(const JobRecord& job, ContainerRuntimeCli cli,
                                                           const Prepared& prepared);
  void mark_running(JobRecord& job, Live& live, pid_t pid);
  // Jobs under their monitor (monitored.cpp); a container job's monitor runs the runtime's `run`.
  boost::asio::awaitable<Result<void>> start_monitored(JobRecord& job, Live& live, SpawnSpec spec);
  boost::asio::awaitable<Ending> watch_monitored(JobRecord& job, Live& live);
  Ending ending_of(JobRecord& job, const std::string& cancel_reason, const monitor::WorkloadExit& e) const;
  std::string timed_out_reason(const JobRecord& job) const;
  boost::asio::awaitable<void> adopt_monitored(std::string id);
  boost::asio::awaitable<bool> recover_monitored(const std::string& id);
  boost::asio::awaitable<void> remove_job_container(const JobRecord& job);
  void remove_run_folder(const std::string& id);
  void conclude(JobRecord& job, Live& live, Ending end);
  boost::asio::awaitable<void> attach_container(std::string id, ContainerRuntimeCli cli);
  boost::asio::awaitable<Ending> follow_container(JobRecord& job, Live& live, const ContainerRuntimeCli& cli);
  boost::asio::awaitable<void> remove_container(ContainerRuntimeCli cli, std::string name);
  boost::asio::awaitable<Result<std::optional<InspectResult>>> inspect(ContainerRuntimeCli cli, std::string name);
  boost::asio::awaitable<ExitStatus> supervise(JobRecord& job, Live& live);
  boost::asio::awaitable<void> stop_job(JobRecord& job, Live& live, const char* why);
  boost::asio::awaitable<Result<std::string>> run_tool(std::vector<std::string> argv, Duration timeout);
  boost::asio::awaitable<Result<ContainerRuntimeCli>> runtime();
  boost::asio::awaitable<std::vector<pid_t>> kill_marked(std::string id);
  std::string marker(const std::string& id) const;  // "INSTANCED_JOB_RUN=<run folder>"
  void finish(JobRecord& job, JobState state, std::string reason, std::vector<std::string> tail);
  std::vector<std::string> environment(const JobRecord& job, const UserIdentity& user) const;
  std::optional<std::string> waiting_reason(const JobRecord& job) const;
  Result<void> persist(const JobRecord& job);
  boost::asio::awaitable<Result<void>> durable();
  boost::asio::awaitable<void> sync_journal();
  void store_failed(const std::string& why);
  void adopt(std::unique_ptr<JobRecord> job);
  void keep_damaged_journal(const std::vector<std::string>& problems);
  std::size_t load_legacy_files(const std::filesystem::path& dir);
  void compact_store();
  boost::asio::awaitable<void> compact_journal();
  std::vector<const JobRecord*> store_order() const;
  void prune();
  void publish();
  void poke() { wake_.pulse(); }
  std::size_t free_slots() const;
  Gate* closed_gate() const;  // the first prerequisite still closed, or none
  std::filesystem::path store_file(const std::string& id, const char* extension) const;
  std::vector<unsigned> free_gpus(const GpuView& view) const;
  std::size_t position(const JobRecord& job) const;
  status::Response log_response(const status::Request& req) const;
  boost::asio::awaitable<status::Response> submit_response(const status::Request& req);
  Submitted enqueue(JobSpec spec, std::optional<unsigned> owner);

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  JobsConfig config_;
  std::string state_dir_;
  std::string status_socket_;
  GpuSource gpus_;
  monitor::Launcher monitors_;
  Logger log_;
  std::size_t slots_ = 1;
  std::vector<Gate*> prerequisites_;
  std::unordered_map<std::string, std::unique_ptr<JobRecord>> jobs_;
  JobQueue queue_;                                 // queued, by seq
  std::map<std::uint64_t, std::string> finished_;  // finished, by seq: the oldest pruned first
  std::map<std::string, std::unique_ptr<Live>> live_;  // starting or running
  std::uint64_t next_seq_ = 1;
  Wake wake_;                              // pulsed to run dispatch() again
  Wake live_changed_;  // pulsed when a job's supervisor ends
  // Container CLI commands run by the agent itself (inspect, rm, load, ...), bounded so that
  // a burst of job starts stays within the agent's unit's memory and task caps.
  std::size_t tools_running_ = 0;
  Wake tool_done_;
  Clock::steady_time hold_until_{};          // drain: nothing starts before this
  std::optional<std::string> store_error_;   // state_dir/jobs cannot be written
  JobJournal journal_;
  bool commit_posted_ = false;              // a sync begun at the end of this turn of the loop
  LoopLock journal_turn_;                   // one sync or compaction of the journal at a time
  bool compaction_asked_ = false;           // compact_journal() spawned, not yet begun
  // The journal's syncs on a thread of their own: calls hung on a dead mount that hold the
  // shared pool's threads cannot hold the queue's answers.
  BlockingPool sync_pool_{1, 4};
  std::vector<std::filesystem::path> legacy_files_;  // read into the journal, removed once it is written
  std::shared_ptr<bool> alive_ = std::make_shared<bool>(true);  // for what is posted to the loop
  bool stopping_ = false;
  bool recovered_ = false;
  bool gpu_blocked_ = false;  // the last dispatch() left a job waiting for GPUs: look again soon
  // The GPUs (known, count) when dispatch() last walked every queued job: while they stay so,
  // no queued GPU job can have become a "never fits" (a new one was checked at submit).
  std::optional<std::pair<bool, std::size_t>> walked_view_;
  std::uint64_t started_total_ = 0;
  double wait_seconds_total_ = 0;
};

}  // namespace instanced::jobs
