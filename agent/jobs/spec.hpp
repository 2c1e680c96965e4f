// A job as submitted (the control command `submit_job`, `instancectl job submit`, POST
// /v1/jobs) and as the agent remembers it (a line of state_dir/jobs/journal at every change
// of state, journal.hpp). docs/jobs.md has the fields.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/clock.hpp"
#include "agent/jobs/config.hpp"
#include "common/result.hpp"
#include "common/run_log.hpp"

namespace instanced::jobs {

enum class JobState { queued, starting, running, succeeded, failed, cancelled, timed_out, lost };
std::string_view to_string(JobState s);
std::optional<JobState> parse_job_state(std::string_view s);
inline bool is_finished(JobState s) { return s >= JobState::succeeded; }

// GPUs wanted: none, a count, or every GPU of the instance ("all").
struct GpuRequest {
  bool all = false;
  unsigned count = 0;
  bool any() const { return all || count > 0; }
  bool operator==(const GpuRequest&) const = default;
};

struct JobSpec {
  std::string id;             // [A-Za-z0-9._-]{1,64}: submitting the same id again is idempotent
  std::string image;          // empty: a plain process; else the container image to run
  std::string image_archive;  // a local image archive loaded when the image is not present
  std::vector<std::string> command;  // argv; a process job's argv[0] is looked up on PATH
  std::map<std::string, std::string> env;
  std::string workdir;  // absolute; may be on the file share
  std::string user;     // empty: jobs.user
  GpuRequest gpus;
  int cpu_weight = 100;  // 1..10000, as cgroup v2's cpu.weight: 100 is the default share
  std::optional<Duration> timeout;  // empty: jobs.default_timeout
  std::map<std::string, std::string> labels;

  boost::json::object to_json() const;  // everything, for the state file
  // What status output shows: environment variables by name only (values may be secrets).
  boost::json::object public_json() const;
  bool operator==(const JobSpec&) const = default;
};

// Checks a job's JSON and reads it. The error names the field, after `where` ("args."):
// "args.command: must be a non-empty array of strings". A missing id is generated.
Result<JobSpec> parse_job_spec(const boost::json::object& o, const JobsConfig& config, std::string_view where = "");

// What the agent remembers of a job.
struct JobRecord {
  JobSpec spec;
  std::uint64_t seq = 0;  // submission order: the queue is FIFO by seq
  JobState state = JobState::queued;
  Clock::wall_time submitted{}, started{}, ended{};
  std::optional<int> exit_code;
  int signal = 0;
  std::string reason;  // why it failed, was cancelled or lost, for people
  std::vector<unsigned> gpus;  // the GPUs it holds or held (NVML indices)
  std::string container;       // the container's name (image jobs)
  std::string log;             // the output's file
  LogLayout layout;
  bool cancel_requested = false;  // on disk, so that a cancel survives a restart
  // Submitted through the status socket by an operator other than root: the job runs as
  // that uid (and its `user` field is refused), so the socket is no way to become root.
  std::optional<unsigned> owner_uid;

  std::string to_text() const;
  static Result<JobRecord> parse(std::string_view text);  // never throws
  // For /v1/jobs and results: the spec's public part, state, times, outcome.
  boost::json::object to_json() const;

 private:
  static Result<JobRecord> parse_record(std::string_view text);
};

}  // namespace instanced::jobs
