// Shutdowns from inside the VM (`power:`, docs/workstation.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

// Shutdowns from inside the VM (sudo shutdown, poweroff): reported as os_shutdown.
struct PowerConfig {
  bool logind = true;  // take a delay inhibitor lock and watch PrepareForShutdown on the system bus
  Duration report_wait = std::chrono::seconds(5);  // for the control plane's ack of os_shutdown

  template <class V>
  void visit(V& v) {
    v("logind", logind);
    v("report_wait", report_wait, check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(1)));
  }
};

}  // namespace instanced
