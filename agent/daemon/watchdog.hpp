// WATCHDOG=1 from an event-loop timer at half of WATCHDOG_USEC: if the loop stalls, the
// pings stop and systemd restarts the agent, which is the point.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <chrono>

#include "common/clock.hpp"
#include "common/notifier.hpp"

namespace instanced {

boost::asio::awaitable<void> watchdog_loop(Clock& clock, Notifier& notifier, std::chrono::microseconds timeout);

}  // namespace instanced
