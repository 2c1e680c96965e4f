// bench/status-crowd: how long an operator waits for `GET /v1/health` on the status socket
// while another client crowds it: nothing (the baseline), one process holding 1,000 idle
// connections, and 300 processes holding one idle connection each (more than the 256
// slots). Each probe is a fresh connection from this process (as instancectl makes one),
// timed from connect() to the whole answer. Prints figures; asserts nothing.
//
// usage: status-crowd [--probes N] [--agent PATH]   (PATH: another instanced binary)
#include <algorithm>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tests/support/agent_process.hpp"

using namespace instanced::testing;
using namespace std::chrono;

namespace {

// One health request on a fresh connection: milliseconds to the whole answer, or -1.
double probe(const std::string& socket) {
  auto t0 = steady_clock::now();
  int fd = connect_unix(socket);
  if (fd < 0) return -1;
  timeval limit{60, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
  const std::string req = "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
  if (::send(fd, req.data(), req.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(req.size())) {
    ::close(fd);
    return -1;
  }
  std::string reply;
  char buf[4096];
  for (ssize_t n; (n = ::recv(fd, buf, sizeof buf, 0)) > 0;) reply.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  if (reply.rfind("HTTP/1.1 200", 0) != 0) return -1;
  return duration<double, std::milli>(steady_clock::now() - t0).count();
}

// Children holding `per_child` idle connections each, until killed.
std::vector<pid_t> crowd(const std::string& socket, int children, int per_child) {
  std::vector<pid_t> pids;
  int ready[2];
  if (::pipe(ready) != 0) return pids;
  for (int i = 0; i < children; ++i) {
    pid_t pid = ::fork();
    if (pid == 0) {
      ::close(ready[0]);
      std::vector<int> fds;
      for (int c = 0; c < per_child; ++c) fds.push_back(connect_unix(socket));
      char ok = 'y';
      (void)::write(ready[1], &ok, 1);
      ::pause();
      ::_exit(0);
    }
    pids.push_back(pid);
  }
  ::close(ready[1]);
  for (int i = 0; i < children; ++i) {
    char c;
    (void)::read(ready[0], &c, 1);
  }
  ::close(ready[0]);
  std::this_thread::sleep_for(1500ms);  // idle for longer than the agent's 1 s before it reclaims a slot
  return pids;
}

void report(const char* label, std::vector<double> ms, double baseline) {
  std::vector<double> ok;
  for (double v : ms)
    if (v >= 0) ok.push_back(v);
  std::sort(ok.begin(), ok.end());
  if (ok.empty()) {
    std::printf("  %-46s no answer (%zu probes)\n", label, ms.size());
    return;
  }
  double p50 = ok[ok.size() / 2], p99 = ok[std::min(ok.size() - 1, ok.size() * 99 / 100)];
  std::printf("  %-46s first %8.2f ms   p50 %6.2f ms   p99 %8.2f ms   (%zu of %zu answered)", label, ms.front(), p50,
              p99, ok.size(), ms.size());
  if (baseline > 0) std::printf("   p50 %.1fx the baseline", p50 / baseline);
  std::printf("\n");
}

}  // namespace

int main(int argc, char** argv) {
  int probes = 100;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--probes") probes = std::stoi(argv[i + 1]);
    if (a == "--agent") ::setenv("INSTANCED_TEST_AGENT", argv[i + 1], 1);
  }
  TempDir dir;
  // The defaults that matter here: 256 slots, 16 per process, request_timeout 10 s.
  AgentProcess agent(dir, "state_dir: {dir}/state\nstatus:\n  socket: {dir}/status.sock\n  group: root\n");
  if (!agent.start_and_wait_ready(10s)) {
    std::fprintf(stderr, "the agent did not start: %s\n", agent.log().c_str());
    return 1;
  }
  const std::string socket = agent.socket().string();
  auto run = [&](int n) {
    std::vector<double> ms;
    for (int i = 0; i < n; ++i) {
      ms.push_back(probe(socket));
      std::this_thread::sleep_for(10ms);
    }
    return ms;
  };
  std::printf("GET /v1/health on a fresh connection (%s):\n", agent_binary().c_str());
  (void)run(10);  // warm-up
  auto base = run(probes);
  std::sort(base.begin(), base.end());
  const double base_p50 = base[base.size() / 2];
  report("nothing else connected", base, 0);
  {
    auto holders = crowd(socket, 1, 1000);
    report("another process holds 1,000 idle connections", run(probes), base_p50);
    for (pid_t p : holders) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
  }
  std::this_thread::sleep_for(500ms);
  {
    auto holders = crowd(socket, 300, 1);
    report("300 processes hold one idle connection each", run(probes), base_p50);
    for (pid_t p : holders) ::kill(p, SIGKILL), ::waitpid(p, nullptr, 0);
  }
  agent.signal(SIGTERM);
  (void)agent.wait_exit(10s);
  return 0;
}
