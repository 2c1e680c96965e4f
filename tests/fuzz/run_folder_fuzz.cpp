// libFuzzer target: a run folder's files (agent/monitor/workload.hpp) as the agent reads
// them after a restart and the monitor reads its spec: a value or an error naming the file,
// never a crash; what is accepted is written back unchanged.
#include <cstdint>
#include <string_view>

#include "agent/monitor/workload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace instanced::monitor;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  if (auto spec = WorkloadSpec::parse(text)) {
    auto back = WorkloadSpec::parse(spec->to_text());
    if (!back || back->to_text() != spec->to_text()) __builtin_trap();
  } else if (!spec.error().message.starts_with("spec.json: ")) {
    __builtin_trap();
  }
  if (auto e = WorkloadExit::parse(text)) {
    auto back = WorkloadExit::parse(e->to_text());
    if (!back || back->to_text() != e->to_text()) __builtin_trap();
  } else if (!e.error().message.starts_with("exit.json: ")) {
    __builtin_trap();
  }
  if (auto m = MonitorInfo::parse(text); !m && !m.error().message.starts_with("monitor.json: ")) __builtin_trap();
  return 0;
}
