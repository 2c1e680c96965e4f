// bench/jobs' probe job: tells the benchmark when it started (one datagram on the Unix
// socket argv[1]: the job's name and CLOCK_MONOTONIC in nanoseconds, read first thing) and
// exits. Kept to a few system calls so that what the benchmark measures is the queue and the
// spawn, not the job; the time is the probe's own, so that the benchmark's wait for the
// submission's answer does not count.
#include <cstdio>
#include <cstring>
#include <ctime>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char** argv) {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  if (argc < 3) return 2;
  char message[256];
  const int n = std::snprintf(message, sizeof message, "%s %lld", argv[2],
                              static_cast<long long>(now.tv_sec) * 1000000000LL + now.tv_nsec);
  if (n <= 0 || static_cast<std::size_t>(n) >= sizeof message) return 2;
  int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  ::sendto(fd, message, static_cast<std::size_t>(n), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  return 0;
}
