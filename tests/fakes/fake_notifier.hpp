// Records what would have gone to systemd.
#pragma once

#include <string>
#include <vector>

#include "common/notifier.hpp"

namespace instanced::testing {

class FakeNotifier final : public Notifier {
 public:
  void notify(std::string_view state) override { messages.emplace_back(state); }
  std::optional<std::chrono::microseconds> watchdog_timeout() override { return watchdog; }

  std::size_t count(std::string_view what) const {
    std::size_t n = 0;
    for (const auto& m : messages) n += m.find(what) != std::string::npos;
    return n;
  }

  std::vector<std::string> messages;
  std::optional<std::chrono::microseconds> watchdog;
};

}  // namespace instanced::testing
