// A job's resource limits (`jobs.memory_limit`, `max_processes`, `max_open_files`, a job's
// `cpu_weight`; docs/jobs.md "Limits"). Under systemd they are properties of the job's own
// unit, enforced by the kernel's control groups on the job and all it starts; without
// systemd as PID 1 a process job gets what a process can be given itself (an open-files
// limit, a niceness for its weight); a container job gets the runtime's options.
#pragma once

#include <string>
#include <vector>

#include "agent/jobs/config.hpp"
#include "common/process.hpp"

namespace instanced::jobs {

// The weight a job runs with: an operator's job (submitted through the socket by a user
// other than root) gets no more than the default share, as it could not raise a priority.
int effective_cpu_weight(int requested, bool operator_job);

// The unit's properties: CPUWeight, MemoryMax (MemoryLimit on the cgroup v1 hierarchy,
// where systemd 237 reads only that), TasksMax, LimitNOFILE.
std::vector<std::string> unit_properties(const JobsConfig& config, int cpu_weight, bool cgroup_unified);

// Without systemd: the open-files limit and a niceness for the weight.
void apply_process_limits(const JobsConfig& config, int cpu_weight, SpawnSpec& spec);

// `podman run` / `docker run` options: --memory, --pids-limit, --ulimit nofile (the weight
// is run_argv's --cpu-shares).
std::vector<std::string> container_limit_options(const JobsConfig& config);

// The configured limits a process job does not get without systemd ("jobs.memory_limit").
std::vector<std::string> limits_needing_systemd(const JobsConfig& config);

}  // namespace instanced::jobs
