#include "agent/jobs/limits.hpp"

#include <algorithm>
#include <cmath>
#include <sys/resource.h>

namespace instanced::jobs {

namespace {

// cgroup v2's cpu.weight (100 is the default share) as a niceness: each nice step is
// about a 1.25 ratio of CPU time under the kernel's scheduler.
int nice_for_weight(int weight) {
  if (weight == 100) return 0;
  const double n = std::log(100.0 / weight) / std::log(1.25);
  return std::clamp(static_cast<int>(std::lround(n)), -20, 19);
}

}  // namespace

int effective_cpu_weight(int requested, bool operator_job) { return operator_job ? std::min(requested, 100) : requested; }

std::vector<std::string> unit_properties(const JobsConfig& config, int cpu_weight, bool cgroup_unified) {
  std::vector<std::string> p{"CPUWeight=" + std::to_string(cpu_weight)};
  if (config.memory_limit.bytes)
    p.push_back((cgroup_unified ? "MemoryMax=" : "MemoryLimit=") + std::to_string(config.memory_limit.bytes));
  if (config.max_processes) p.push_back("TasksMax=" + std::to_string(config.max_processes));
  if (config.max_open_files) p.push_back("LimitNOFILE=" + std::to_string(config.max_open_files));
  return p;
}

void apply_process_limits(const JobsConfig& config, int cpu_weight, SpawnSpec& spec) {
  if (config.max_open_files) spec.limits.emplace_back(RLIMIT_NOFILE, static_cast<std::uint64_t>(config.max_open_files));
  spec.nice = nice_for_weight(cpu_weight);
}

std::vector<std::string> container_limit_options(const JobsConfig& config) {
  std::vector<std::string> o;
  if (config.memory_limit.bytes) o.insert(o.end(), {"--memory", std::to_string(config.memory_limit.bytes)});
  if (config.max_processes) o.insert(o.end(), {"--pids-limit", std::to_string(config.max_processes)});
  if (config.max_open_files) {
    const std::string n = std::to_string(config.max_open_files);
    o.insert(o.end(), {"--ulimit", "nofile=" + n + ":" + n});
  }
  return o;
}

std::vector<std::string> limits_needing_systemd(const JobsConfig& config) {
  std::vector<std::string> names;
  if (config.memory_limit.bytes) names.emplace_back("jobs.memory_limit");
  if (config.max_processes) names.emplace_back("jobs.max_processes");
  return names;
}

}  // namespace instanced::jobs
