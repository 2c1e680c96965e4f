// A small bounded thread pool for work that can block (statvfs on a network mount, a disk
// scan, NVML calls, mount(2)). The event loop awaits the result with a timeout: a call that
// hangs costs one pool thread, never the loop. Threads still stuck at shutdown are
// abandoned (detached) rather than joined, so a hung mount cannot hang the agent's exit.
#pragma once

#include <atomic>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <condition_variable>
#include <deque>
#include <exception>
#include <fmt/format.h>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <type_traits>
#include <vector>

#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced {

template <class T>
struct flatten_result {
  using type = Result<T>;
};
template <class T>
struct flatten_result<Result<T>> {
  using type = Result<T>;
};

class BlockingPool {
 public:
  explicit BlockingPool(std::size_t threads, std::size_t max_queue = 256);
  ~BlockingPool();
  BlockingPool(const BlockingPool&) = delete;
  BlockingPool& operator=(const BlockingPool&) = delete;

  // Runs `fn` on a pool thread. Returns its result, or an Error "WHAT timed out after T"
  // when `timeout` passes first (the call keeps its thread until it returns), or
  // "WHAT: pool queue full". Throws operation_aborted if the awaiting coroutine is cancelled.
  template <class F>
  auto run(std::string what, Duration timeout, F&& fn)
      -> boost::asio::awaitable<typename flatten_result<std::invoke_result_t<F>>::type>;

  std::size_t busy() const { return core_->busy.load(); }
  std::uint64_t timeouts() const { return timeouts_; }

 private:
  struct Core {
    std::mutex m;
    std::condition_variable cv;
    std::deque<std::function<void()>> queue;
    bool stopping = false;
    std::atomic<std::size_t> busy{0};
  };
  template <class R>
  struct Shared;
  template <class R>
  auto await_job(std::string what, Duration timeout, std::shared_ptr<Shared<R>> shared)
      -> boost::asio::awaitable<typename flatten_result<R>::type>;
  bool submit(std::function<void()> job);

  std::shared_ptr<Core> core_;
  std::vector<std::thread> threads_;
  std::size_t max_queue_;
  std::uint64_t timeouts_ = 0;
};

template <class R>
struct BlockingPool::Shared {
  std::function<void()> job;                       // queued by await_job
  std::optional<boost::asio::steady_timer> timer;  // set before the job is queued
  std::optional<R> value;
  std::exception_ptr error;
  bool done = false;
};

// Not a coroutine itself: the job (which takes ownership of `fn`) is built here and kept
// in the shared state, so no coroutine ever takes a callable as a parameter. With GCC 12,
// a callable passed into a coroutine and moved on from there lost its captures while
// still running (ASan: heap-use-after-free; tests/common/blocking_pool_test.cpp).
template <class F>
auto BlockingPool::run(std::string what, Duration timeout, F&& fn)
    -> boost::asio::awaitable<typename flatten_result<std::invoke_result_t<F>>::type> {
  using R = std::invoke_result_t<F>;
  auto shared = std::make_shared<Shared<R>>();
  // The job holds a weak reference to the state: the state holds the job.
  shared->job = [weak = std::weak_ptr<Shared<R>>(shared), core = core_, fn = std::decay_t<F>(std::forward<F>(fn))]() mutable {
    std::optional<R> value;
    std::exception_ptr error;
    try {
      value.emplace(fn());
    } catch (...) {
      error = std::current_exception();
    }
    // The loop may be gone if the pool was abandoned at shutdown; post only while it is not.
    // The error and the state are moved, not copied, to the loop: this thread must not drop
    // a reference after the hand-over. When it dropped the last reference to the state, the
    // exception was freed here after the loop had read it; ThreadSanitizer reported that as
    // a race (1 run in 15; possibly a false report, as the reference counts are atomics);
    // real or not, nothing of the call's result is freed on this thread now.
    std::lock_guard lock(core->m);
    auto shared = weak.lock();
    if (core->stopping || !shared) return;
    // Every reference this thread holds is moved to the loop, so the state (and the
    // exception in it) is always freed there, never here after the loop has read it.
    auto ex = shared->timer->get_executor();
    boost::asio::post(ex, [shared = std::move(shared), value = std::move(value), error = std::move(error)]() mutable {
      shared->value = std::move(value);
      shared->error = std::move(error);
      shared->done = true;
      shared->timer->cancel();
    });
  };
  return await_job<R>(std::move(what), timeout, std::move(shared));
}

template <class R>
auto BlockingPool::await_job(std::string what, Duration timeout, std::shared_ptr<Shared<R>> shared)
    -> boost::asio::awaitable<typename flatten_result<R>::type> {
  using Out = typename flatten_result<R>::type;
  shared->timer.emplace(co_await boost::asio::this_coro::executor);
  shared->timer->expires_after(timeout);
  if (!submit(std::move(shared->job))) co_return Error{fmt::format("{}: blocking pool queue full", what)};
  boost::system::error_code ec;
  co_await shared->timer->async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
  if (shared->done) {
    if (shared->error) std::rethrow_exception(shared->error);
    co_return Out(std::move(*shared->value));
  }
  if (ec == boost::asio::error::operation_aborted)
    throw boost::system::system_error(boost::asio::error::operation_aborted);
  ++timeouts_;
  co_return Error{fmt::format("{} timed out after {}", what, format_duration(timeout))};
}

}  // namespace instanced
