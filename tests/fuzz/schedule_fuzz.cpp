// libFuzzer target: what the control plane and the applications hand the agent for the
// workstation services: cron expressions (set_schedule), POSIX TZ rules (a zone file's
// footer) and Jupyter's /api/kernels and /api/terminals answers. The first byte picks
// which; the rest is the text.
#include <boost/json/parse.hpp>
#include <cstdint>
#include <string>

#include "agent/apps/probe.hpp"
#include "common/cron.hpp"

using namespace instanced;

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  std::string text(reinterpret_cast<const char*>(data) + 1, size - 1);
  const auto after = cron::TimePoint(std::chrono::seconds(1'800'000'000));
  switch (data[0] % 3) {
    case 0: {
      auto s = cron::parse(text);
      if (!s) {
        if (s.error().message.empty()) __builtin_trap();
        break;
      }
      auto berlin = cron::TimeZone::from_rule("fuzz", "CET-1CEST,M3.5.0,M10.5.0/3");
      if (!berlin) __builtin_trap();
      for (const auto* z : {&*berlin}) {
        auto n = cron::next_after(*s, *z, after);
        if (n && *n <= after) __builtin_trap();  // strictly later, always
      }
      break;
    }
    case 1: {
      auto z = cron::TimeZone::from_rule("fuzz", text);
      if (!z) {
        if (z.error().message.empty()) __builtin_trap();
        break;
      }
      (void)z->format(after);
      auto every = cron::parse("*/7 * * * *");
      auto n = cron::next_after(*every, *z, after);
      if (n && *n <= after) __builtin_trap();
      break;
    }
    default: {
      boost::system::error_code ec;
      auto v = boost::json::parse(text, ec);
      if (ec) break;
      apps::JupyterActivity a;
      auto k = apps::add_kernels(a, v);
      auto t = apps::add_terminals(a, v);
      if ((!k && k.error().message.empty()) || (!t && t.error().message.empty())) __builtin_trap();
      if (a.busy > a.kernels) __builtin_trap();
      break;
    }
  }
  return 0;
}
