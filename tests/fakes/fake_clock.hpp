// A simulated clock: time moves only when the test calls advance(). Coroutines sleeping
// on it resume, in deadline order, when the test advances past their deadline and then
// runs the io_context (poll()).
#pragma once

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <list>

#include "common/clock.hpp"

namespace instanced::testing {

class FakeClock final : public Clock {
 public:
  steady_time now() const override { return now_; }
  wall_time wall_now() const override { return wall_; }

  boost::asio::awaitable<void> sleep_until(steady_time deadline) override {
    if (deadline <= now_) co_return;
    boost::asio::steady_timer timer(co_await boost::asio::this_coro::executor,
                                    boost::asio::steady_timer::time_point::max());
    Waiter w{deadline, &timer, false};
    waiters_.push_back(&w);
    ++sleeps_;
    boost::system::error_code ec;
    co_await timer.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
    waiters_.remove(&w);
    if (!w.fired) throw boost::system::system_error(boost::asio::error::operation_aborted);
  }

  void advance(std::chrono::steady_clock::duration d) {
    now_ += d;
    wall_ += std::chrono::duration_cast<std::chrono::system_clock::duration>(d);
    for (auto* w : waiters_)
      if (!w->fired && w->deadline <= now_) {
        w->fired = true;
        w->timer->cancel();
      }
  }

  std::size_t sleepers() const { return waiters_.size(); }
  // Sleeps begun so far: a loop has finished a round once this grew after an advance().
  std::size_t sleeps() const { return sleeps_; }

 private:
  struct Waiter {
    steady_time deadline;
    boost::asio::steady_timer* timer;
    bool fired;
  };
  steady_time now_{std::chrono::hours(1000)};
  wall_time wall_{std::chrono::seconds(1'800'000'000)};
  std::list<Waiter*> waiters_;
  std::size_t sleeps_ = 0;
};

}  // namespace instanced::testing
