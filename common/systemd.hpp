// The three systemd interfaces the agent uses, spoken directly. Each is a documented,
// stable protocol that systemd invites programs to implement themselves: the
// notification socket (sd_notify(3)), socket activation (sd_listen_fds(3)) and the
// journal's native protocol (systemd.journal-fields(7), "Native Journal Protocol").
// libsystemd would bring seven shared libraries (~1 MiB resident) and open a new socket
// per watchdog ping; these keep one socket each for the agent's life.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/fs.hpp"

namespace instanced::systemd {

// Descriptors passed by socket activation (LISTEN_PID/LISTEN_FDS), starting at fd 3,
// marked close-on-exec; the variables are removed so children do not inherit them.
std::vector<int> listen_fds();

// WATCHDOG_USEC when the watchdog is enabled for this process (WATCHDOG_PID, if set,
// must be ours).
std::optional<std::chrono::microseconds> watchdog_timeout();

// A connected datagram socket to $NOTIFY_SOCKET (a path or '@' abstract name).
class NotifySocket {
 public:
  NotifySocket();  // from the environment; inert when NOTIFY_SOCKET is not set
  ~NotifySocket();
  NotifySocket(const NotifySocket&) = delete;
  NotifySocket& operator=(const NotifySocket&) = delete;
  bool active() const { return static_cast<bool>(fd_); }
  void send(std::string_view state);

 private:
  Fd fd_;
};

// A datagram socket to journald. One entry per send(): fields KEY=value; values holding
// a newline use the protocol's length-prefixed form.
class JournalSocket {
 public:
  explicit JournalSocket(std::string path = "/run/systemd/journal/socket");
  ~JournalSocket();
  JournalSocket(const JournalSocket&) = delete;
  JournalSocket& operator=(const JournalSocket&) = delete;
  bool send(const std::vector<std::pair<std::string_view, std::string_view>>& fields);

  // The datagram for `fields`, as sent.
  static std::string encode(const std::vector<std::pair<std::string_view, std::string_view>>& fields);

 private:
  bool connect();
  std::string path_;
  Fd fd_;
};

}  // namespace instanced::systemd
