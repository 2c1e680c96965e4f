// libFuzzer target: the kernel log's XID lines (agent/gpu/health.cpp), read from
// /dev/kmsg, where any driver or module may write anything.
#include <cstdint>
#include <string_view>

#include "agent/gpu/health.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace instanced::gpu;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = parse_kmsg_xid(text);
  if (e) {
    // A parsed XID has a number, a PCI address that compares equal to itself, and a line
    // safe to log (escaped: no control characters but tab).
    if (e->xid <= 0 || !same_pci_device(e->pci_bus_id, e->pci_bus_id)) __builtin_trap();
    for (char c : e->text)
      if ((static_cast<unsigned char>(c) < 0x20 && c != '\t') || c == 0x7f) __builtin_trap();
    (void)classify_xid(e->xid);
  }
  return 0;
}
