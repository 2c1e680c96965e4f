// A loop's sleep that others can cut short: the subsystem waits on a steady_timer until it
// expires (the next round) or someone cancels it (a reload, a command: look again now).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace instanced {

// Returns when `timer` expires or is cancelled; throws operation_aborted when the calling
// coroutine itself was cancelled (the agent is stopping).
inline boost::asio::awaitable<void> wait_for_wake(boost::asio::steady_timer& timer) {
  boost::system::error_code ec;
  co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  auto cs = co_await boost::asio::this_coro::cancellation_state;
  if (cs.cancelled() != boost::asio::cancellation_type::none)
    throw boost::system::system_error(boost::asio::error::operation_aborted);
}

}  // namespace instanced
