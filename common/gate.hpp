// A named condition other subsystems wait for: "mounts ready", "setup done". Start scripts
// wait for the required mounts' gate; the job queue waits for setup's. Event loop only.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <string>

#include "common/wake.hpp"

namespace instanced {

class Gate {
 public:
  Gate(boost::asio::any_io_executor ex, std::string name)
      : name_(std::move(name)), opened_(std::move(ex)) {}

  const std::string& name() const { return name_; }
  bool is_open() const { return open_; }
  void open() {
    open_ = true;
    opened_.pulse();
  }
  void close() { open_ = false; }

  // Returns once the gate is open. Cancellable (throws operation_aborted).
  boost::asio::awaitable<void> wait() {
    while (!open_) co_await opened_.wait();
  }

 private:
  std::string name_;
  bool open_ = false;
  Wake opened_;  // pulsed when it opens
};

}  // namespace instanced
