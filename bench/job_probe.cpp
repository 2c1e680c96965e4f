// bench/jobs' probe job: tells the benchmark it has started (one datagram naming the job
// on the Unix socket argv[1]) and exits. Kept to a few system calls so that what the
// benchmark measures is the queue and the spawn, not the job.
#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  int fd = ::socket(AF_UNIX, SOCK_DGRAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, argv[1], sizeof addr.sun_path - 1);
  ::sendto(fd, argv[2], std::strlen(argv[2]), 0, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  return 0;
}
