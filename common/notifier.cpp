#include "common/notifier.hpp"

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

namespace instanced {

// The notification protocol is one datagram per message to $NOTIFY_SOCKET, a path or an
// abstract name ('@'). libsystemd's sd_notify() opens and closes a socket on every call;
// the watchdog pings for the agent's whole life, so this keeps one socket open instead.
SdNotifier::SdNotifier() {
  const char* e = std::getenv("NOTIFY_SOCKET");
  if (!e || (e[0] != '/' && e[0] != '@') || std::strlen(e) >= sizeof(sockaddr_un{}.sun_path)) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::size_t len = std::strlen(e);
  std::memcpy(addr.sun_path, e, len);
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr),
                static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len)) != 0) {
    ::close(fd);
    return;
  }
  fd_ = fd;
}

SdNotifier::~SdNotifier() {
  if (fd_ >= 0) ::close(fd_);
}

void SdNotifier::notify(std::string_view state) {
  if (fd_ < 0) return;  // not under systemd: nothing to tell
  while (::send(fd_, state.data(), state.size(), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

std::optional<std::chrono::microseconds> SdNotifier::watchdog_timeout() {
  uint64_t usec = 0;
  if (sd_watchdog_enabled(0, &usec) > 0 && usec > 0) return std::chrono::microseconds(usec);
  return std::nullopt;
}

}  // namespace instanced
