// How a monitor running as a unit of its own learns that the kernel's OOM killer ended its
// workload at the unit's memory limit: its control group's OOM-kill counter, read before
// the workload starts and after it has ended. The counter is the line "oom_kill N" of
// cgroup v2's memory.events, or of cgroup v1's memory.oom_control (Linux 4.13; Ubuntu
// 18.04's systemd 237 runs on the v1 hierarchy).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace instanced::monitor {

// The counter's file for the control group that `proc_cgroup` (/proc/self/cgroup's text)
// names under `root` (/sys/fs/cgroup): the v1 memory controller's group where one is
// listed, else the v2 group when `unified` (the v2 hierarchy is mounted at `root`); nothing
// when neither (no memory controller: no limit to be killed at).
std::optional<std::string> oom_counter_file(std::string_view proc_cgroup, std::string_view root, bool unified);

// The count in a counter file's text; nothing without an "oom_kill" line.
std::optional<std::uint64_t> oom_kills(std::string_view counter_text);

// Whether the cgroup v2 hierarchy alone is mounted at `root` (else v1's, as on Ubuntu 18.04).
bool cgroup_v2_only(std::string_view root = "/sys/fs/cgroup");

// This process's counter now, read from /proc/self/cgroup and /sys/fs/cgroup; nothing when
// there is none to read.
std::optional<std::uint64_t> own_oom_kills();

}  // namespace instanced::monitor
