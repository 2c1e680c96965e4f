// The job queue's settings (`jobs:`, docs/jobs.md).
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

// The container CLI for jobs that name an image: the first of podman and docker found
// (auto), one of them, or none (jobs with an image are refused).
enum class ContainerRuntime { automatic, podman, docker, none };
template <>
struct EnumNames<ContainerRuntime> {
  static constexpr std::array<std::string_view, 4> names{"auto", "podman", "docker", "none"};
};

struct JobsConfig {
  bool enabled = true;
  std::int64_t slots = 0;  // jobs running at once; 0: two per online CPU
  std::int64_t max_queued = 100000;  // submissions beyond this are refused
  std::int64_t keep_finished = 1000;  // finished jobs remembered (state and log), newest kept
  std::string user = "root";  // the user of jobs that name none
  std::string log_dir = "/var/log/instanced/jobs";
  ByteSize max_log_bytes{64 << 20};  // per job: the head and the tail are kept
  std::int64_t tail_lines = 20;      // last lines sent with the job_finished event
  Duration default_timeout = std::chrono::hours(24);
  Duration max_timeout = std::chrono::hours(24 * 7);
  Duration kill_grace = std::chrono::seconds(10);  // SIGTERM (or `kill`), then SIGKILL after this
  Duration stop_wait = std::chrono::minutes(5);    // prepare_stop waits this long for running jobs
  Duration drain_hold = std::chrono::minutes(10);  // after prepare_stop: no new job starts for this long
  ContainerRuntime runtime = ContainerRuntime::automatic;
  std::string podman = "podman";  // programs: bare names are looked up on PATH
  std::string docker = "docker";
  std::vector<std::string> container_options;  // more options for every `run`
  // Limits of process jobs (containers get the runtime's): 0 is no limit.
  ByteSize memory_limit{0};            // address space (RLIMIT_AS)
  std::int64_t max_open_files = 0;     // RLIMIT_NOFILE
  std::int64_t max_processes = 0;      // RLIMIT_NPROC (per user)

  template <class V>
  void visit(V& v) {
    v("enabled", enabled);
    v("slots", slots, check::range<std::int64_t>(0, 4096));
    v("max_queued", max_queued, check::range<std::int64_t>(1, 1000000));
    v("keep_finished", keep_finished, check::range<std::int64_t>(0, 1000000));
    v("user", user, check::not_empty(), check::max_length(32));
    v("log_dir", log_dir, check::absolute_path());
    v("max_log_bytes", max_log_bytes, check::size_range(ByteSize{4 << 10}, ByteSize{1ULL << 34}));
    v("tail_lines", tail_lines, check::range<std::int64_t>(0, 1000));
    v("default_timeout", default_timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24 * 365)));
    v("max_timeout", max_timeout, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24 * 365)));
    v("kill_grace", kill_grace, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("stop_wait", stop_wait, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(24)));
    v("drain_hold", drain_hold, check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(24)));
    v("runtime", runtime);
    v("podman", podman, check::not_empty(), check::max_length(4096));
    v("docker", docker, check::not_empty(), check::max_length(4096));
    v("container_options", container_options);
    v("memory_limit", memory_limit);
    v("max_open_files", max_open_files, check::range<std::int64_t>(0, 1 << 30));
    v("max_processes", max_processes, check::range<std::int64_t>(0, 1 << 22));
  }
  std::optional<std::string> validate() const;
};

}  // namespace instanced
