// What every subsystem (control, disk, mounts, setup, gpu, jobs, status) is to the daemon.
// The daemon starts them in registration order, each as a child coroutine of its task
// group, and stops them in reverse order on shutdown.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <string>

namespace instanced {

class Subsystem {
 public:
  virtual ~Subsystem() = default;
  virtual std::string name() const = 0;
  // Runs until cancelled. On cancellation it finishes what must not be lost (flush state,
  // report results) and returns. Exceptions are logged by the daemon and restart the
  // subsystem with backoff; they do not stop the agent. The daemon stops a subsystem with
  // one `terminal` cancellation (the only type co_spawn's children and the children of a
  // parallel group `a || b` see), and waits for it until shutdown.timeout is spent.
  // A reloaded configuration reaches a subsystem through the reload hook it was added to
  // the daemon with (Daemon::add): each takes only its own section.
  virtual boost::asio::awaitable<void> run() = 0;
};

}  // namespace instanced
