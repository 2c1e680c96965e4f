// The rules of Asio's coroutines that every subsystem needs, in one place.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/multiple_exceptions.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/system/system_error.hpp>
#include <exception>
#include <string>
#include <type_traits>

namespace instanced {

// Awaits a parallel group (`a || b`, `a && b`). When both sides failed, Asio throws
// multiple_exceptions, which is no system_error: a cancelled `p.wait() || sleep` would not
// be seen as the cancellation it is. This throws the first side's exception instead.
template <class T>
boost::asio::awaitable<T> first_error(boost::asio::awaitable<T> group) {
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(group);
      co_return;
    } else {
      co_return co_await std::move(group);
    }
  } catch (const boost::asio::multiple_exceptions& e) {
    std::rethrow_exception(e.first_exception());
  }
}

// For the steps that must run to their end once a coroutine was cancelled (flush state,
// end a child, unmount), each bounded by its own timeout:
//   co_await asio::this_coro::reset_cancellation_state(ignore_cancellation);
// forgets the cancellation received and ignores later ones. It must be written in the
// cancelled coroutine itself: a cancelled coroutine that awaits another coroutine throws.
inline constexpr auto ignore_cancellation = [](boost::asio::cancellation_type) {
  return boost::asio::cancellation_type::none;
};

// What ended a co_spawned coroutine, for a log line or a last error: "" when it returned
// normally, else the exception's message (a system_error's without Boost's source location).
inline std::string describe(std::exception_ptr e) {
  if (!e) return {};
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& ex) {
    return ex.code().message();
  } catch (const std::exception& ex) {
    return ex.what();
  } catch (...) {
  }
  return "unknown error";
}

// Whether an operation was cancelled (the agent stopping).
inline bool is_cancelled(const boost::system::system_error& e) {
  return e.code() == boost::asio::error::operation_aborted;
}

// Whether it ended by cancellation (the agent stopping): nothing to log.
inline bool is_cancellation(std::exception_ptr e) {
  if (!e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const boost::system::system_error& ex) {
    return is_cancelled(ex);
  } catch (...) {
  }
  return false;
}

}  // namespace instanced
