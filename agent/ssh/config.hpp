// The SSH policy (`ssh:`, docs/workstation.md).
#pragma once

#include <array>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

// unmanaged: the agent leaves SSH alone; enabled/disabled: it keeps the unit so.
enum class SshPolicy { unmanaged, enabled, disabled };
template <>
struct EnumNames<SshPolicy> {
  static constexpr std::array<std::string_view, 3> names{"unmanaged", "enabled", "disabled"};
};

struct SshConfig {
  SshPolicy policy = SshPolicy::unmanaged;
  std::string unit = "ssh.service";
  Duration interval = std::chrono::seconds(60);  // how often drift is looked for

  template <class V>
  void visit(V& v) {
    v("policy", policy);
    v("unit", unit, check::not_empty(), check::max_length(256));
    v("interval", interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(24)));
  }
};

}  // namespace instanced
