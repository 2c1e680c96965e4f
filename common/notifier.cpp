#include "common/notifier.hpp"

#include <string>
#include <systemd/sd-daemon.h>

namespace instanced {

void SdNotifier::notify(std::string_view state) {
  std::string msg(state);
  // Without NOTIFY_SOCKET sd_notify returns 0 and does nothing: the normal case outside systemd.
  (void)sd_notify(0, msg.c_str());
}

std::optional<std::chrono::microseconds> SdNotifier::watchdog_timeout() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return std::chrono::microseconds(usec);
  return std::nullopt;
}

}  // namespace instanced
