// A named condition other subsystems wait for: "mounts ready", "setup done". Start scripts
// wait for the required mounts' gate; the job queue waits for setup's. Event loop only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <string>

namespace instanced {

class Gate {
 public:
  Gate(boost::asio::any_io_executor ex, std::string name)
      : name_(std::move(name)), waiters_(ex, boost::asio::steady_timer::time_point::max()) {}

  const std::string& name() const { return name_; }
  bool is_open() const { return open_; }
  void open() {
    open_ = true;
    waiters_.cancel();
  }
  void close() { open_ = false; }

  // Returns once the gate is open. Cancellable (throws operation_aborted).
  boost::asio::awaitable<void> wait() {
    while (!open_) {
      boost::system::error_code ec;
      co_await waiters_.async_wait(boost::asio::redirect_error(boost::asio::use_awaitable, ec));
      if (open_) break;
      auto cs = co_await boost::asio::this_coro::cancellation_state;
      if (cs.cancelled() != boost::asio::cancellation_type::none)
        throw boost::system::system_error(boost::asio::error::operation_aborted);
    }
  }

 private:
  std::string name_;
  bool open_ = false;
  boost::asio::steady_timer waiters_;
};

}  // namespace instanced
