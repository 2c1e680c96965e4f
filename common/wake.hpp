// A loop's sleep that others can cut short. Loops sleep on the agent's Clock, so tests drive
// every subsystem's rounds with a simulated clock (tests/fakes/fake_clock.hpp); a reload or a
// command cuts the sleep short with pulse(): "look again now". Event loop only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>
#include <utility>

#include "common/clock.hpp"
#include "common/coro.hpp"

namespace instanced {

class Wake {
 public:
  explicit Wake(boost::asio::any_io_executor ex) : timer_(ex, boost::asio::steady_timer::time_point::max()) {}

  // Ends the sleep under way; with none under way, the next one returns at once (a pulse
  // is never lost between a loop's look and its sleep).
  void pulse() {
    pulsed_ = true;
    timer_.cancel();
  }

  // Until pulse(). A pulse ends every wait under way (callers look at their condition
  // again). Throws operation_aborted when the calling coroutine is cancelled.
  boost::asio::awaitable<void> wait() {
    if (!pulsed_) {
      boost::system::error_code ec;
      co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      auto cs = co_await boost::asio::this_coro::cancellation_state;
      if (!pulsed_ && cs.cancelled() != boost::asio::cancellation_type::none)
        throw boost::system::system_error(boost::asio::error::operation_aborted);
    }
    pulsed_ = false;
  }

  // Until pulse(), whatever happens to the calling coroutine: for a wait that must end before
  // the caller's frame goes (a reader that refers to it), in a coroutine already cancelled.
  boost::asio::awaitable<void> wait_through_cancellation() {
    while (!pulsed_) {
      boost::system::error_code ec;
      co_await timer_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    }
    pulsed_ = false;
  }

  // Until `deadline` on `clock` or a pulse, whichever comes first; time_point::max() waits
  // for the pulse alone. Throws operation_aborted when the calling coroutine is cancelled.
  boost::asio::awaitable<void> sleep_until(Clock& clock, Clock::steady_time deadline) {
    if (deadline == Clock::steady_time::max()) {
      co_await wait();
      co_return;
    }
    using namespace boost::asio::experimental::awaitable_operators;
    auto pulsed = wait();
    auto slept = clock.sleep_until(deadline);
    auto either = std::move(pulsed) || std::move(slept);
    co_await first_error(std::move(either));
  }

  boost::asio::awaitable<void> sleep_for(Clock& clock, Clock::steady_time::duration d) {
    return sleep_until(clock, clock.now() + d);
  }

 private:
  bool pulsed_ = false;
  boost::asio::steady_timer timer_;
};

// One coroutine at a time through a section that awaits (a sync of a file, a look at a
// service): the others wait for its end. The turn ends when `Held` goes, also when the
// holder's frame is unwound by a cancellation; a frame destroyed after the lock (a
// coroutine left on the loop when the agent exits) touches nothing. Event loop only.
class LoopLock {
 public:
  explicit LoopLock(boost::asio::any_io_executor ex) : released_(std::move(ex)) {}
  LoopLock(const LoopLock&) = delete;
  LoopLock& operator=(const LoopLock&) = delete;

  class Held {
   public:
    Held() = default;
    explicit Held(std::weak_ptr<LoopLock*> lock) : lock_(std::move(lock)) {}
    Held(Held&& other) noexcept = default;
    Held& operator=(Held&& other) noexcept {
      if (this != &other) {
        release();
        lock_ = std::move(other.lock_);
      }
      return *this;
    }
    Held(const Held&) = delete;
    Held& operator=(const Held&) = delete;
    ~Held() { release(); }
    void release() {
      if (auto lock = lock_.lock()) {
        (*lock)->held_ = false;
        (*lock)->released_.pulse();
      }
      lock_.reset();
    }

   private:
    std::weak_ptr<LoopLock*> lock_;
  };

  // The turn, once nobody else holds it. Throws operation_aborted when the calling coroutine
  // is cancelled while it waits.
  boost::asio::awaitable<Held> acquire() {
    while (held_) co_await released_.wait();
    held_ = true;
    co_return Held(self_);
  }
  bool held() const { return held_; }

 private:
  bool held_ = false;
  Wake released_;  // pulsed when a turn ends
  std::shared_ptr<LoopLock*> self_ = std::make_shared<LoopLock*>(this);
};

}  // namespace instanced
