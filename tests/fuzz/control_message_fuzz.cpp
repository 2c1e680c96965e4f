// libFuzzer target: the control channel's message decoding (envelope, limits, commands).
#include <cstdint>
#include <string_view>

#include "agent/control/protocol.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace instanced::control;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto m = decode(text, Limits{1 << 20, 32});
  if (m.ok()) {
    (void)command_of(*m);
    // A decoded message encodes and decodes to the same type and id.
    auto again = decode(encode(*m), Limits{4 << 20, 40});
    if (!again.ok() || again->type != m->type || again->id != m->id) __builtin_trap();
  }
  return 0;
}
