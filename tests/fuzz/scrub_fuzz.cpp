// libFuzzer target: the diagnostics bundle's redaction (agent/diagnostics/scrub.cpp), which
// every byte of a bundle passes through: a tool's output, a log, a state file. Input: the
// secrets, one per line, up to the first NUL byte; then the text. Properties: the text fed
// in pieces of any size comes out as when fed whole, and no secret (without '*') is left.
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "agent/diagnostics/scrub.hpp"

using instanced::diagnostics::Scrubber;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view in(reinterpret_cast<const char*>(data), size);
  auto nul = in.find('\0');
  if (nul == std::string_view::npos) return 0;
  std::vector<std::string> secrets;
  for (std::string_view rest = in.substr(0, nul); !rest.empty();) {
    auto nl = rest.find('\n');
    secrets.emplace_back(rest.substr(0, nl));
    if (nl == std::string_view::npos) break;
    rest.remove_prefix(nl + 1);
  }
  const std::string_view text = in.substr(nul + 1);

  Scrubber whole(secrets);
  std::string once = whole.feed(text) + whole.finish();

  Scrubber pieces(secrets);
  std::string cut;
  std::size_t step = 1 + nul % 7;
  for (std::size_t at = 0; at < text.size(); at += step, step = step % 13 + 1)
    cut += pieces.feed(text.substr(at, step));
  cut += pieces.finish();

  if (cut != once || pieces.replaced() != whole.replaced()) __builtin_trap();
  for (const auto& s : secrets)
    if (s.size() >= instanced::diagnostics::kMinSecret && s.find('*') == std::string::npos &&
        once.find(s) != std::string::npos)
      __builtin_trap();
  return 0;
}
