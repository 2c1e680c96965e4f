#include "agent/gpu/health.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <fmt/format.h>

#include "common/text.hpp"

namespace instanced::gpu {
namespace {

// Fatal: the GPU needs a reset or a reboot (or its job must be restarted on another one).
// Warning: a fault of one application or a recoverable event worth watching.
struct XidRow {
  int xid;
  XidClass cls;
  std::string_view meaning;
};
constexpr XidRow kXids[] = {
    {13, XidClass::warning, "graphics engine exception (often an application's out-of-range access)"},
    {31, XidClass::warning, "GPU memory page fault (often an application bug)"},
    {43, XidClass::warning, "GPU stopped processing (an application was killed)"},
    {45, XidClass::info, "preemptive cleanup after an application ended"},
    {48, XidClass::fatal, "double-bit ECC error"},
    {61, XidClass::warning, "internal micro-controller breakpoint"},
    {62, XidClass::warning, "internal micro-controller halt"},
    {63, XidClass::warning, "ECC page retirement or row remapping recorded"},
    {64, XidClass::fatal, "ECC page retirement or row remapping failed"},
    {68, XidClass::warning, "video processor exception"},
    {69, XidClass::warning, "graphics engine class error"},
    {74, XidClass::fatal, "NVLink error"},
    {79, XidClass::fatal, "GPU has fallen off the bus"},
    {92, XidClass::fatal, "high single-bit ECC error rate"},
    {94, XidClass::fatal, "contained ECC error (the application must restart)"},
    {95, XidClass::fatal, "uncontained ECC error (a GPU reset is needed)"},
    {119, XidClass::fatal, "GSP RPC timeout"},
    {120, XidClass::fatal, "GSP error"},
};

std::optional<unsigned long> hex(std::string_view s) {
  unsigned long v = 0;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v, 16);
  if (ec != std::errc() || p != s.data() + s.size() || s.empty()) return std::nullopt;
  return v;
}

// domain, bus, device (function ignored) of "[PCI:]DOMAIN:BUS:DEVICE[.FUNCTION]".
std::optional<std::array<unsigned long, 3>> pci_parts(std::string_view s) {
  if (s.starts_with("PCI:")) s.remove_prefix(4);
  if (auto dot = s.find('.'); dot != std::string_view::npos) s = s.substr(0, dot);
  auto c1 = s.find(':');
  if (c1 == std::string_view::npos) return std::nullopt;
  auto c2 = s.find(':', c1 + 1);
  if (c2 == std::string_view::npos) return std::nullopt;
  auto d = hex(s.substr(0, c1)), b = hex(s.substr(c1 + 1, c2 - c1 - 1)), v = hex(s.substr(c2 + 1));
  if (!d || !b || !v) return std::nullopt;
  return std::array<unsigned long, 3>{*d, *b, *v};
}

void worse(Assessment& a, GpuHealth h, std::string reason) {
  if (static_cast<int>(h) > static_cast<int>(a.health)) a.health = h;
  a.reasons.push_back(std::move(reason));
}

}  // namespace

std::string_view to_string(GpuHealth h) {
  switch (h) {
    case GpuHealth::healthy: return "healthy";
    case GpuHealth::degraded: return "degraded";
    case GpuHealth::unhealthy: return "unhealthy";
    case GpuHealth::unavailable: return "unavailable";
  }
  return "unavailable";
}

XidInfo classify_xid(int xid) {
  for (const auto& r : kXids)
    if (r.xid == xid) return {r.cls, r.meaning};
  return {XidClass::warning, "not in the agent's catalogue"};
}

std::optional<XidEvent> parse_kmsg_xid(std::string_view record) {
  // /dev/kmsg: "PRIORITY,SEQ,USEC,FLAGS;MESSAGE" (continuation lines start with a space).
  auto semi = record.find(';');
  auto marker = record.find("NVRM: Xid (");
  if (marker == std::string_view::npos) return std::nullopt;
  if (semi != std::string_view::npos && semi < marker) record.remove_prefix(semi + 1), marker = record.find("NVRM: Xid (");
  std::string_view rest = record.substr(marker + 11);
  auto close = rest.find("): ");
  if (close > 40) return std::nullopt;  // npos (not found) too
  std::string_view pci = rest.substr(0, close);
  if (!pci_parts(pci)) return std::nullopt;
  rest.remove_prefix(close + 3);
  int xid = 0;
  auto [p, ec] = std::from_chars(rest.data(), rest.data() + rest.size(), xid);
  if (ec != std::errc() || p == rest.data() || xid <= 0 || xid > 100000) return std::nullopt;
  XidEvent e;
  e.pci_bus_id = std::string(pci.starts_with("PCI:") ? pci.substr(4) : pci);
  e.xid = xid;
  e.source = "kmsg";
  std::string_view line = record.substr(marker);
  while (!line.empty() && (line.back() == '\n' || line.back() == '\r')) line.remove_suffix(1);
  e.text = escape_for_log(line.substr(0, 300));
  return e;
}

bool same_pci_device(std::string_view a, std::string_view b) {
  auto x = pci_parts(a), y = pci_parts(b);
  return x && y && *x == *y;
}

Assessment assess(const GpuSample& g, const GpuSample* before, const std::vector<int>& xids, const Thresholds& t) {
  Assessment a;
  if (g.error) {
    worse(a, GpuHealth::unavailable,
          g.error == nvml::kGpuIsLost ? "GPU is lost (fell off the bus): a reboot is needed" : g.error_text);
  }
  std::vector<int> seen;  // one reason per XID number, however often it came
  for (int xid : xids) {
    if (std::find(seen.begin(), seen.end(), xid) != seen.end()) continue;
    seen.push_back(xid);
    auto info = classify_xid(xid);
    if (info.cls == XidClass::fatal)
      worse(a, GpuHealth::unhealthy, fmt::format("XID {}: {}", xid, info.meaning));
    else if (info.cls == XidClass::warning)
      worse(a, GpuHealth::degraded, fmt::format("XID {}: {}", xid, info.meaning));
  }
  if (g.ecc_uncorrected_volatile.value_or(0) > 0)
    worse(a, GpuHealth::unhealthy, fmt::format("{} uncorrectable ECC errors since the last reset", *g.ecc_uncorrected_volatile));
  if (g.remap_failure.value_or(false)) worse(a, GpuHealth::unhealthy, "row remapping failed: the GPU needs replacing");
  if (g.remap_pending.value_or(false)) worse(a, GpuHealth::degraded, "remapped rows pending: a GPU reset applies them");
  if (g.retired_pending.value_or(false)) worse(a, GpuHealth::degraded, "page retirement pending: a GPU reset applies it");
  if (before && g.ecc_corrected_volatile && before->ecc_corrected_volatile &&
      *g.ecc_corrected_volatile >= *before->ecc_corrected_volatile + t.corrected_ecc_rise)
    worse(a, GpuHealth::degraded,
          fmt::format("corrected ECC errors rising ({} -> {})", *before->ecc_corrected_volatile, *g.ecc_corrected_volatile));
  const std::uint64_t reasons = g.clock_event_reasons.value_or(0);
  if (reasons & (nvml::kReasonHwThermalSlowdown | nvml::kReasonSwThermalSlowdown))
    worse(a, GpuHealth::degraded, "clocks lowered: thermal slowdown");
  if (reasons & nvml::kReasonHwPowerBrakeSlowdown) worse(a, GpuHealth::degraded, "clocks lowered: power brake");
  if (g.temperature && g.temp_slowdown && *g.temperature >= *g.temp_slowdown)
    worse(a, GpuHealth::degraded, fmt::format("temperature {} C at the slowdown threshold {} C", *g.temperature, *g.temp_slowdown));
  return a;
}

}  // namespace instanced::gpu
