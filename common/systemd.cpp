#include "common/systemd.hpp"

#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "common/fs.hpp"

namespace instanced::systemd {
namespace {

std::optional<unsigned long long> env_number(const char* name) {
  const char* v = std::getenv(name);
  if (!v || !*v) return std::nullopt;
  unsigned long long n = 0;
  auto [ptr, ec] = std::from_chars(v, v + std::strlen(v), n);
  if (ec != std::errc() || *ptr != '\0') return std::nullopt;
  return n;
}

// A datagram socket connected to `path` ('@' = abstract), or none.
Fd connect_datagram(std::string_view path) {
  sockaddr_un addr{};
  if (path.empty() || path.size() >= sizeof addr.sun_path || (path[0] != '/' && path[0] != '@')) return Fd();
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  if (addr.sun_path[0] == '@') addr.sun_path[0] = '\0';
  Fd fd(::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0));
  if (!fd) return Fd();
  auto len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + path.size());
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), len) != 0) return Fd();
  return fd;
}

}  // namespace

std::vector<int> listen_fds() {
  std::vector<int> fds;
  auto pid = env_number("LISTEN_PID");
  auto n = env_number("LISTEN_FDS");
  if (pid && n && *pid == static_cast<unsigned long long>(::getpid()) && *n > 0 && *n < 1024) {
    for (int fd = 3; fd < 3 + static_cast<int>(*n); ++fd) {
      int flags = ::fcntl(fd, F_GETFD);
      if (flags < 0) continue;
      ::fcntl(fd, F_SETFD, flags | FD_CLOEXEC);
      fds.push_back(fd);
    }
  }
  ::unsetenv("LISTEN_PID");
  ::unsetenv("LISTEN_FDS");
  ::unsetenv("LISTEN_FDNAMES");
  return fds;
}

std::optional<std::chrono::microseconds> watchdog_timeout() {
  auto usec = env_number("WATCHDOG_USEC");
  if (!usec || *usec == 0) return std::nullopt;
  if (auto pid = env_number("WATCHDOG_PID"); pid && *pid != static_cast<unsigned long long>(::getpid()))
    return std::nullopt;
  return std::chrono::microseconds(*usec);
}

NotifySocket::NotifySocket() {
  if (const char* e = std::getenv("NOTIFY_SOCKET")) fd_ = connect_datagram(e);
}

NotifySocket::~NotifySocket() = default;

void NotifySocket::send(std::string_view state) {
  if (!fd_) return;
  while (::send(fd_.get(), state.data(), state.size(), MSG_NOSIGNAL) < 0 && errno == EINTR) {
  }
}

JournalSocket::JournalSocket(std::string path) : path_(std::move(path)) { connect(); }

JournalSocket::~JournalSocket() = default;

bool JournalSocket::connect() {
  fd_.reset();  // The old socket goes before the new one is made.
  fd_ = connect_datagram(path_);
  return static_cast<bool>(fd_);
}

std::string JournalSocket::encode(const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
  std::string out;
  for (const auto& [key, value] : fields) {
    out += key;
    if (value.find('\n') == std::string_view::npos) {
      out += '=';
      out += value;
    } else {
      out += '\n';
      std::uint64_t len = value.size();
      for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((len >> (8 * i)) & 0xff));  // little endian
      out += value;
    }
    out += '\n';
  }
  return out;
}

bool JournalSocket::send(const std::vector<std::pair<std::string_view, std::string_view>>& fields) {
  std::string datagram = encode(fields);
  for (int attempt = 0; attempt < 2; ++attempt) {
    if (!fd_ && !connect()) return false;
    if (::send(fd_.get(), datagram.data(), datagram.size(), MSG_NOSIGNAL) >= 0) return true;
    if (errno == EMSGSIZE) return false;  // entries here are small log lines; never this large
    // journald restarted (ECONNREFUSED) or went away: reconnect once.
    fd_.reset();
  }
  return false;
}

}  // namespace instanced::systemd
