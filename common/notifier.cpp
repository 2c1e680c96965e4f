#include "common/notifier.hpp"

#include "common/systemd.hpp"

namespace instanced {

struct SdNotifier::Impl {
  systemd::NotifySocket socket;
};

SdNotifier::SdNotifier() : impl_(std::make_unique<Impl>()) {}
SdNotifier::~SdNotifier() = default;

void SdNotifier::notify(std::string_view state) { impl_->socket.send(state); }

std::optional<std::chrono::microseconds> SdNotifier::watchdog_timeout() { return systemd::watchdog_timeout(); }

}  // namespace instanced
