// bench/footprint: instanced's footprint next to Prometheus' node exporter on the same
// machine, both idle: RSS after the window, CPU seconds over the window, and instanced's
// time from exec to READY=1 (median of repeated starts). Prints figures; asserts nothing.
//
// usage: footprint [--seconds N] [--starts N] [--watchdog-usec N] [--node-exporter PATH]
//   --watchdog-usec: WATCHDOG_USEC given to instanced (default 30000000, as under the
//   unit's WatchdogSec=30s; 0 runs it without a watchdog)
#include <algorithm>
#include <cinttypes>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <fstream>
#include <sstream>
#include <string>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

#include "tests/support/agent_process.hpp"

using namespace instanced::testing;
using namespace std::chrono;

namespace {

const char* kDemoConfig = R"(
instance:
  name: bench
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
)";

struct Sample {
  double rss_mib = 0;
  double pss_mib = 0;   // shared pages divided among the processes that map them
  double anon_mib = 0;  // the process's own heap and stacks
  double cpu_seconds = 0;  // on-CPU time of all live threads (schedstat, ns resolution)
  double cpu_ticks_seconds = 0;  // utime+stime from /proc/PID/stat (10 ms resolution)
};

Sample sample(pid_t pid) {
  Sample s;
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind("VmRSS:", 0) == 0) s.rss_mib = std::stod(line.substr(6)) / 1024.0;
  std::ifstream rollup("/proc/" + std::to_string(pid) + "/smaps_rollup");
  for (std::string line; std::getline(rollup, line);) {
    if (line.rfind("Pss:", 0) == 0) s.pss_mib = std::stod(line.substr(4)) / 1024.0;
    if (line.rfind("Anonymous:", 0) == 0) s.anon_mib = std::stod(line.substr(10)) / 1024.0;
  }
  std::string task_dir = "/proc/" + std::to_string(pid) + "/task";
  if (DIR* d = opendir(task_dir.c_str())) {
    while (auto* e = readdir(d)) {
      if (e->d_name[0] == '.') continue;
      std::ifstream ss(task_dir + "/" + e->d_name + "/schedstat");
      unsigned long long ns = 0;
      if (ss >> ns) s.cpu_seconds += static_cast<double>(ns) / 1e9;
    }
    closedir(d);
  }
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  std::getline(stat, line);
  std::istringstream rest(line.substr(line.rfind(')') + 2));
  std::string field;
  unsigned long ut = 0, st = 0;
  for (int i = 3; i <= 15 && rest >> field; ++i) {
    if (i == 14) ut = std::stoul(field);
    if (i == 15) st = std::stoul(field);
  }
  s.cpu_ticks_seconds = static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
  return s;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

}  // namespace

int main(int argc, char** argv) {
  int seconds = 60, starts = 21;
  std::string watchdog_usec = "30000000";
  std::string node_exporter = "/usr/bin/prometheus-node-exporter";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--seconds") seconds = std::stoi(argv[i + 1]);
    else if (a == "--starts") starts = std::stoi(argv[i + 1]);
    else if (a == "--node-exporter") node_exporter = argv[i + 1];
    else if (a == "--watchdog-usec") watchdog_usec = argv[i + 1];
  }

  // 1. exec to READY=1, repeated.
  std::vector<double> ready_ms;
  for (int i = 0; i < starts; ++i) {
    TempDir dir;
    AgentProcess agent(dir, kDemoConfig);
    auto t0 = steady_clock::now();
    if (!agent.start_and_wait_ready(10s)) {
      std::fprintf(stderr, "instanced did not become ready:\n%s\n", agent.log().c_str());
      return 1;
    }
    ready_ms.push_back(duration<double, std::milli>(steady_clock::now() - t0).count());
    agent.signal(SIGTERM);
    agent.wait_exit(10s);
  }
  std::sort(ready_ms.begin(), ready_ms.end());
  std::printf("exec to READY=1 over %d starts: median %.2f ms, min %.2f ms, max %.2f ms\n", starts,
              median(ready_ms), ready_ms.front(), ready_ms.back());

  // 2. Both idle, side by side, for the same window.
  TempDir dir;
  AgentProcess agent(dir, kDemoConfig);
  std::map<std::string, std::string> env;
  if (watchdog_usec != "0") env["WATCHDOG_USEC"] = watchdog_usec;
  if (!agent.start_and_wait_ready(10s, env)) return 1;
  pid_t ne = spawn({node_exporter, "--web.listen-address=127.0.0.1:19100"}, "/dev/null");
  std::this_thread::sleep_for(500ms);
  auto a0 = sample(agent.pid());
  auto n0 = sample(ne);
  std::this_thread::sleep_for(seconds * 1s);
  auto a1 = sample(agent.pid());
  auto n1 = sample(ne);
  kill(ne, SIGTERM);
  waitpid(ne, nullptr, 0);

  double a_cpu = a1.cpu_seconds - a0.cpu_seconds, n_cpu = n1.cpu_seconds - n0.cpu_seconds;
  std::printf("\ninstanced's WATCHDOG_USEC: %s\n", watchdog_usec == "0" ? "none" : watchdog_usec.c_str());
  std::printf("idle for %d s, side by side        %14s %14s %10s\n", seconds, "instanced", "node_exporter", "ratio");
  std::printf("RSS at the end (MiB)              %14.2f %14.2f %10.3f\n", a1.rss_mib, n1.rss_mib, a1.rss_mib / n1.rss_mib);
  std::printf("PSS at the end (MiB)              %14.2f %14.2f %10.3f\n", a1.pss_mib, n1.pss_mib, a1.pss_mib / n1.pss_mib);
  std::printf("anonymous memory at the end (MiB) %14.2f %14.2f %10.3f\n", a1.anon_mib, n1.anon_mib, a1.anon_mib / n1.anon_mib);
  std::printf("CPU over the window (ms, schedstat) %12.3f %14.3f %10.4f\n", a_cpu * 1e3, n_cpu * 1e3,
              n_cpu > 0 ? a_cpu / n_cpu : 0.0);
  std::printf("CPU over the window (ms, utime+stime) %10.0f %14.0f\n",
              (a1.cpu_ticks_seconds - a0.cpu_ticks_seconds) * 1e3, (n1.cpu_ticks_seconds - n0.cpu_ticks_seconds) * 1e3);
  std::printf("\ntargets: RSS ratio <= 0.333, CPU ratio <= 0.333, exec to READY < 50 ms\n");
  return 0;
}
