// systemd's notification protocol behind one seam. The product wires SdNotifier (one
// socket to $NOTIFY_SOCKET, kept open: the watchdog pings for the agent's whole life);
// tests run the real binary against a NOTIFY_SOCKET datagram socket of their own.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string_view>

namespace instanced {

class Notifier {
 public:
  virtual ~Notifier() = default;
  // One or more newline-separated assignments: "READY=1\nSTATUS=serving".
  virtual void notify(std::string_view state) = 0;
  // WATCHDOG_USEC when the watchdog is enabled for this process.
  virtual std::optional<std::chrono::microseconds> watchdog_timeout() = 0;
};

class SdNotifier final : public Notifier {
 public:
  SdNotifier();
  ~SdNotifier() override;
  SdNotifier(const SdNotifier&) = delete;
  SdNotifier& operator=(const SdNotifier&) = delete;
  void notify(std::string_view state) override;
  std::optional<std::chrono::microseconds> watchdog_timeout() override;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

}  // namespace instanced
