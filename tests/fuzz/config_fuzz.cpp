// libFuzzer target: the config loader must turn any bytes into a Config or an error
// message, never a crash, hang or leak.
#include <cstdint>
#include <string_view>

#include "agent/config/config.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto r = instanced::parse_config_text(text, "fuzz.yaml");
  if (r.ok()) {
    // Whatever parsed must dump and parse back.
    auto again = instanced::parse_config_text(instanced::dump_config(*r), "dump.yaml");
    if (!again.ok()) __builtin_trap();
  }
  return 0;
}
