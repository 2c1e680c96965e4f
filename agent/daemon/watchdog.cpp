#include "agent/daemon/watchdog.hpp"

namespace instanced {

boost::asio::awaitable<void> watchdog_loop(Clock& clock, Notifier& notifier, std::chrono::microseconds timeout) {
  const auto interval = timeout / 2;
  auto next = clock.now();
  for (;;) {
    notifier.notify("WATCHDOG=1");
    next += interval;
    // Never catch up in a burst after a stall: one ping, then the regular rhythm.
    if (next < clock.now()) next = clock.now() + interval;
    co_await clock.sleep_until(next);
  }
}

}  // namespace instanced
