// The GPU health model: the XID catalogue, the kernel log's XID lines, and the rules that
// turn one sample (and the XIDs seen) into healthy, degraded or unhealthy, each with its
// reasons. Pure functions; the table of XIDs is kept here, in one place, with its source.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/gpu/nvml.hpp"

namespace instanced::gpu {

enum class GpuHealth { healthy, degraded, unhealthy, unavailable };
std::string_view to_string(GpuHealth h);

enum class XidClass { fatal, warning, info };
struct XidInfo {
  XidClass cls = XidClass::info;
  std::string_view meaning;
};
// NVIDIA's XID catalogue (docs.nvidia.com/deploy/xid-errors) and the XIDs DCGM's health
// watches treat as failures (dcgm's DCGM_HEALTH_WATCH_* and its XID policy).
XidInfo classify_xid(int xid);

// "NVRM: Xid (PCI:0000:3b:00): 79, pid=..., GPU has fallen off the bus." in a kernel
// log record (with or without /dev/kmsg's "6,1234,5678,-;" prefix). Nothing for other lines.
std::optional<XidEvent> parse_kmsg_xid(std::string_view record);

// PCI addresses compared as numbers: "0000:3b:00", "00000000:3B:00.0" and "PCI:0000:3b:00.0"
// name the same device. False when either cannot be read.
bool same_pci_device(std::string_view a, std::string_view b);

struct Assessment {
  GpuHealth health = GpuHealth::healthy;
  std::vector<std::string> reasons;  // why it is not healthy, for people
};

struct Thresholds {
  std::uint64_t corrected_ecc_rise = 1;  // corrected errors more than the last sample: degraded
};

// One GPU: its sample, the previous sample (for rising counters) and the XIDs seen on it
// since the agent started.
Assessment assess(const GpuSample& now, const GpuSample* before, const std::vector<int>& xids, const Thresholds& t);

}  // namespace instanced::gpu
