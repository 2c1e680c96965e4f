// logind's shutdown notice, over D-Bus (org.freedesktop.login1(5)): a "delay" inhibitor
// lock on shutdown, and the PrepareForShutdown(true) signal that logind sends before the
// system goes down, holding the shutdown until the lock is released (at most
// InhibitDelayMaxSec, 5 s by default). Spoken through libsystemd's sd-bus, loaded at run
// time (dlopen) like NVML: the agent does not need it elsewhere, and a VM without a system
// bus is a normal case. sd_bus_open_system() honours DBUS_SYSTEM_BUS_ADDRESS.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/result.hpp"

namespace instanced::power {

class Logind {
 public:
  virtual ~Logind() = default;
  // Connects, subscribes to PrepareForShutdown and takes the delay lock.
  virtual Result<void> open() = 0;
  // The connection's descriptor: readable when there is something to process().
  virtual int fd() const = 0;
  // Handles what arrived; the PrepareForShutdown values received (true: going down,
  // false: a shutdown was cancelled). An error when the connection is gone.
  virtual Result<std::vector<bool>> process() = 0;
  // Takes the delay lock again (after a cancelled shutdown); releases it.
  virtual Result<void> inhibit() = 0;
  virtual void release() = 0;
  virtual bool holding() const = 0;
};

class SdBusLogind final : public Logind {
 public:
  SdBusLogind();
  ~SdBusLogind() override;
  Result<void> open() override;
  int fd() const override;
  Result<std::vector<bool>> process() override;
  Result<void> inhibit() override;
  void release() override;
  bool holding() const override { return lock_fd_ >= 0; }

  struct Api;
  struct State;

 private:
  std::unique_ptr<State> s_;
  int lock_fd_ = -1;
};

}  // namespace instanced::power
