// One blocking call at a time, on a thread of its own, awaited with a timeout: for a
// syscall that may never return (stat on a dead network mount, a hung FUSE server, a
// stuck NVML call). Such a call cannot be interrupted, so a timed-out call keeps its
// thread until it returns, and until then the next call is refused at once ("still
// blocked since ...") instead of starting another thread: a hung mount costs one thread,
// however many probes come after it, and never a thread of the shared BlockingPool.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <fmt/format.h>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>

#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced {

class SingleFlight {
 public:
  explicit SingleFlight(boost::asio::any_io_executor ex) : ex_(std::move(ex)), core_(std::make_shared<Core>()) {}
  ~SingleFlight() {
    std::lock_guard lock(core_->m);
    core_->abandoned = true;  // a thread still running must not touch the loop any more
  }
  SingleFlight(const SingleFlight&) = delete;
  SingleFlight& operator=(const SingleFlight&) = delete;

  // True while a call (perhaps one that timed out) has not returned.
  bool busy() const { return core_->busy.load(); }
  // How long the call in flight has been running (zero when none).
  Duration busy_for() const {
    if (!busy()) return Duration::zero();
    return std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - core_->started.load());
  }
  std::uint64_t timeouts() const { return timeouts_; }

  // Runs `fn` (returning T; it must not throw) on a new thread; its value, or an Error when it did not return
  // within `timeout` or when the previous call is still blocked. Cancellable.
  template <class F>
  auto run(std::string what, Duration timeout, F fn) -> boost::asio::awaitable<Result<std::invoke_result_t<F>>>;

 private:
  struct Core {
    std::mutex m;
    bool abandoned = false;
    std::atomic<bool> busy{false};
    std::atomic<std::chrono::steady_clock::time_point> started{};
  };
  template <class T>
  struct Waiter {
    std::optional<boost::asio::steady_timer> timer;
    std::optional<T> value;
    std::string refused;  // the previous call is still blocked
  };
  template <class T>
  auto await(std::string what, Duration timeout, std::shared_ptr<Waiter<T>> w) -> boost::asio::awaitable<Result<T>>;

  boost::asio::any_io_executor ex_;
  std::shared_ptr<Core> core_;
  std::uint64_t timeouts_ = 0;
};

// Not a coroutine: the thread is started here and takes `fn`, so no coroutine frame owns a
// callable (see blocking_pool.hpp on GCC 12).
template <class F>
auto SingleFlight::run(std::string what, Duration timeout, F fn)
    -> boost::asio::awaitable<Result<std::invoke_result_t<F>>> {
  using T = std::invoke_result_t<F>;
  auto w = std::make_shared<Waiter<T>>();
  w->timer.emplace(ex_);
  w->timer->expires_after(timeout);
  if (core_->busy.load()) {
    w->refused = fmt::format("{}: the previous call is still blocked after {}", what, format_duration(busy_for()));
    return await<T>(std::move(what), timeout, std::move(w));
  }
  core_->busy = true;
  core_->started = std::chrono::steady_clock::now();
  std::thread([core = core_, weak = std::weak_ptr<Waiter<T>>(w), fn = std::move(fn)]() mutable {
    std::optional<T> value;
    value.emplace(fn());
    std::lock_guard lock(core->m);
    core->busy = false;
    auto waiter = weak.lock();
    if (core->abandoned || !waiter) return;
    boost::asio::post(waiter->timer->get_executor(), [waiter, value = std::move(value)]() mutable {
      waiter->value = std::move(value);
      waiter->timer->cancel();
    });
  }).detach();
  return await<T>(std::move(what), timeout, std::move(w));
}

template <class T>
auto SingleFlight::await(std::string what, Duration timeout, std::shared_ptr<Waiter<T>> w)
    -> boost::asio::awaitable<Result<T>> {
  if (!w->refused.empty()) co_return Error{w->refused};
  boost::system::error_code ec;
  co_await w->timer->async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  if (w->value) co_return std::move(*w->value);
  if (ec == boost::asio::error::operation_aborted)
    throw boost::system::system_error(boost::asio::error::operation_aborted);
  ++timeouts_;
  co_return Error{fmt::format("{} timed out after {}", what, format_duration(timeout))};
}

}  // namespace instanced
