// bench/jobs: the job queue's submit-to-start latency and memory per queued job, side by
// side with task-spooler (Debian's `tsp`, a queue many people use for exactly this).
// Asserts nothing; prints figures.
//
// Submit-to-start (one probe at a time, 20 ms apart): from just before the submission is
// sent to the moment the job's probe process (bench/job_probe) has started and said so on a
// datagram socket: the request, the write to disk, the scheduler and the spawn, all of it.
// With the queues empty, instanced and tsp take turns, round by round (side by side).
//   - instanced, queue empty, through its status socket (keep-alive HTTP) and through
//     `instancectl job submit`;
//   - instanced with 10,000 jobs queued ahead (GPU jobs waiting for the one GPU of the fake
//     NVML, which a long job holds): CPU jobs pass them (the queue keeps its CPU jobs apart);
//   - tsp, queue empty, through `tsp -n` (its own CLI; it has no other interface).
// Memory per queued job: the queue's process RSS before and after 10,000 jobs are queued
// (instanced: GPU jobs waiting; tsp: behind a long job holding its only slot).
// Memory per running job: the RSS and PSS of the job's monitor (instanced-run).
//
// usage: jobs [--queued N] [--probes N]
#include <algorithm>
#include <boost/json.hpp>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <fstream>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "common/fs.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/nvml_scenario.hpp"
#include "tests/support/unix_http.hpp"

using namespace instanced::testing;
namespace json = boost::json;
using Clock = std::chrono::steady_clock;

namespace {

class ProbeSocket {
 public:
  explicit ProbeSocket(std::filesystem::path path) : path_(std::move(path)) {
    fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) throw std::runtime_error("bind " + path_.string());
    timeval tv{10, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~ProbeSocket() { ::close(fd_); }
  const std::filesystem::path& path() const { return path_; }
  // Until the probe named `id` reports; the time it started (its own reading of
  // CLOCK_MONOTONIC, steady_clock's clock on Linux).
  Clock::time_point wait(const std::string& id) {
    char buf[256];
    for (;;) {
      ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
      if (n < 0) throw std::runtime_error("no probe within 10 s (waiting for " + id + ")");
      const std::string got(buf, static_cast<std::size_t>(n));
      if (got.size() <= id.size() + 1 || !got.starts_with(id + ' ')) continue;
      return Clock::time_point(std::chrono::nanoseconds(std::stoll(got.substr(id.size() + 1))));
    }
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

// Between probes: each is measured on its own, not behind the previous job's ending.
constexpr auto kGap = std::chrono::milliseconds(20);

double ms(Clock::duration d) { return std::chrono::duration<double, std::milli>(d).count(); }

double percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  if (v.empty()) return 0;
  auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
  return v[std::min(i, v.size() - 1)];
}

long rss_kib(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  for (std::string l; std::getline(in, l);)
    if (l.starts_with("VmRSS:")) return std::stol(l.substr(6));
  return -1;
}

// A field of /proc/PID/smaps_rollup ("Pss:", "Private_Dirty:"), in KiB.
long rollup_kib(pid_t pid, const std::string& field) {
  std::ifstream in(fmt::format("/proc/{}/smaps_rollup", pid));
  for (std::string l; std::getline(in, l);)
    if (l.starts_with(field)) return std::stol(l.substr(field.size()));
  return -1;
}

// Runs argv with `env` added; waits for it; its exit code.
int run(const std::vector<std::string>& argv, const std::map<std::string, std::string>& env = {}) {
  pid_t pid = spawn(argv, "/dev/null", env);
  int st = 0;
  ::waitpid(pid, &st, 0);
  return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

// The tsp server: the tsp process (other than clients) whose environment names our socket.
pid_t find_tsp_server(const std::string& socket) {
  DIR* d = ::opendir("/proc");
  pid_t found = -1;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
    std::string cmd = slurp(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmd.rfind("tsp", 0) != 0 && cmd.find("/tsp") == std::string::npos) continue;
    std::string env = slurp(std::string("/proc/") + e->d_name + "/environ");
    if (env.find("TS_SOCKET=" + socket) != std::string::npos) found = std::atoi(e->d_name);
  }
  ::closedir(d);
  return found;
}

// The PSS of tsp's waiting clients (every tsp process naming our socket but the server).
long clients_pss_kib(const std::string& socket, pid_t server) {
  long total = 0;
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '1' || e->d_name[0] > '9' || std::atoi(e->d_name) == server) continue;
    std::string cmd = slurp(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmd.rfind("/usr/bin/tsp", 0) != 0) continue;
    if (slurp(std::string("/proc/") + e->d_name + "/environ").find("TS_SOCKET=" + socket) == std::string::npos) continue;
    std::ifstream in(std::string("/proc/") + e->d_name + "/smaps_rollup");
    for (std::string l; std::getline(in, l);)
      if (l.starts_with("Pss:")) total += std::stol(l.substr(4));
  }
  ::closedir(d);
  return total;
}

// SIGKILL to every process (but this one) whose environment holds `entry` ("NAME=value").
void kill_environment(const std::string& entry) {
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    const pid_t pid = std::atoi(e->d_name);
    if (pid <= 0 || pid == ::getpid()) continue;
    const std::string env = slurp(std::string("/proc/") + e->d_name + "/environ");
    if (env.find(entry + '\0') != std::string::npos || env.ends_with(entry)) ::kill(pid, SIGKILL);
  }
  ::closedir(d);
}

struct Latency {
  std::vector<double> samples;
  void print(const char* what) const {
    std::printf("  %-58s p50 %7.2f ms   p99 %7.2f ms   (n=%zu)\n", what, percentile(samples, 50), percentile(samples, 99),
                samples.size());
  }
};

}  // namespace

int main(int argc, char** argv) {
  int queued = 10000, probes = 200;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--queued") queued = std::atoi(argv[i + 1]);
    else if (a == "--probes") probes = std::atoi(argv[i + 1]);
  }
  TempDir dir;
  ProbeSocket probe_sock(dir / "probe.sock");
  const std::string probe = JOB_PROBE_BIN;
  std::printf("bench/jobs: %d queued jobs, %d probes per figure, %ld CPUs\n\n", queued, probes, ::sysconf(_SC_NPROCESSORS_ONLN));

  // ---- instanced ----
  write_scenario(dir, with_gpus(1));
  dir.write("kmsg", "");
  AgentProcess agent(dir, R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
disk:
  paths: []
gpu:
  interval: 1s
  kmsg: {dir}/kmsg
  cuda_roots: []
  include_dirs: []
jobs:
  log_dir: {dir}/logs
  max_queued: 1000000
  keep_finished: 1000
)");
  if (!agent.start_and_wait_ready(10s, {{"LD_LIBRARY_PATH", FAKE_NVML_DIR}, {"FAKE_NVML_SCENARIO", (dir / "scenario.json").string()}})) {
    std::fprintf(stderr, "the agent did not start:\n%s\n", agent.log().c_str());
    return 1;
  }
  UnixHttp http(agent.socket());
  for (int i = 0; i < 100 && json::parse(http.get("/v1/gpu").body).at("state") != "sampled"; ++i)
    std::this_thread::sleep_for(50ms);
  auto submit = [&](const json::object& job) {
    auto r = http.post("/v1/jobs", json::serialize(job));
    if (r.status != 202) throw std::runtime_error("submit: " + std::to_string(r.status) + " " + r.body);
  };
  int seq = 0;
  auto probe_job = [&](const std::string& id) {
    return json::object{{"id", id}, {"command", json::array{probe, probe_sock.path().string(), id}}};
  };
  // Warm up (page cache, first fork).
  for (int i = 0; i < 20; ++i) {
    std::string id = fmt::format("warm{}", i);
    submit(probe_job(id));
    probe_sock.wait(id);
  }
  // task-spooler beside it: its server up and warm before the rounds.
  const std::string ts_socket = (dir / "tsp.sock").string();
  const std::map<std::string, std::string> ts_env{{"TS_SOCKET", ts_socket}, {"TS_MAXFINISHED", "1000"}, {"TMPDIR", dir.path().string()}};
  const bool have_tsp = std::filesystem::exists("/usr/bin/tsp");
  if (have_tsp) {
    run({"/usr/bin/tsp", "-S", std::to_string(2 * ::sysconf(_SC_NPROCESSORS_ONLN))}, ts_env);
    for (int i = 0; i < 20; ++i) {
      std::string id = fmt::format("tw{}", i);
      run({"/usr/bin/tsp", "-n", probe, probe_sock.path().string(), id}, ts_env);
      probe_sock.wait(id);
    }
  }
  // Side by side: each round starts one probe through the status socket, one through tsp
  // and, every fourth round, one through instancectl, one after the other, so that both
  // queues see the same machine (this VM's figures move by 2 ms from minute to minute).
  const std::string socket = agent.socket().string();
  Latency empty_http, empty_cli, busy_http, tsp_cli, answered;
  std::vector<double> paired;  // socket / tsp, round by round
  for (int i = 0; i < probes; ++i) {
    std::string id = fmt::format("e{}", ++seq);
    auto t0 = Clock::now();
    submit(probe_job(id));
    answered.samples.push_back(ms(Clock::now() - t0));  // its record durable (docs/jobs.md)
    empty_http.samples.push_back(ms(probe_sock.wait(id) - t0));
    std::this_thread::sleep_for(kGap);
    if (have_tsp) {
      id = fmt::format("t{}", ++seq);
      auto t = Clock::now();
      pid_t pid = spawn({"/usr/bin/tsp", "-n", probe, probe_sock.path().string(), id}, "/dev/null", ts_env);
      tsp_cli.samples.push_back(ms(probe_sock.wait(id) - t));
      ::waitpid(pid, nullptr, 0);
      paired.push_back(empty_http.samples.back() / tsp_cli.samples.back());
      std::this_thread::sleep_for(kGap);
    }
    if (i % 4 != 0) continue;
    id = fmt::format("c{}", ++seq);
    auto t = Clock::now();
    pid_t pid = spawn({instancectl_binary(), "--socket", socket, "job", "submit", "--id", id, "--", probe,
                       probe_sock.path().string(), id},
                      "/dev/null");
    empty_cli.samples.push_back(ms(probe_sock.wait(id) - t));
    ::waitpid(pid, nullptr, 0);
    std::this_thread::sleep_for(kGap);
  }
  // What the queue's durability costs on this disk, now: the journal's fdatasync (one per
  // submission, before its answer; a new job starts meanwhile), on the state folder's file system.
  Latency disk_sync;
  {
    const auto file = dir / "sync-probe";
    instanced::Fd fd(::open(file.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    const std::string record(250, 'x');
    for (int i = 0; i < probes && fd; ++i) {
      if (!instanced::write_all(fd.get(), record)) break;
      auto t = Clock::now();
      ::fdatasync(fd.get());
      disk_sync.samples.push_back(ms(Clock::now() - t));
      std::this_thread::sleep_for(kGap);
    }
  }
  // The GPU held; then `queued` GPU jobs wait behind it.
  submit(json::object{{"id", "holder"}, {"command", json::array{"/bin/sleep", "3600"}}, {"gpus", 1}});
  std::this_thread::sleep_for(300ms);
  const long rss0 = rss_kib(agent.pid());
  // What a running job costs beside its own process: its monitor (instanced-run).
  const auto monitor_file = dir / "state/jobs/holder.run/monitor.json";
  eventually([&] { return !slurp(monitor_file).empty(); });
  const auto monitor_pid = static_cast<pid_t>(json::parse(slurp(monitor_file)).at("pid").as_int64());
  const long monitor_rss = rss_kib(monitor_pid), monitor_pss = rollup_kib(monitor_pid, "Pss:"),
             monitor_private = rollup_kib(monitor_pid, "Private_Dirty:");
  auto t0 = Clock::now();
  for (int i = 0; i < queued; ++i)
    submit(json::object{{"id", fmt::format("q{:06}", i)}, {"command", json::array{"/bin/true"}}, {"gpus", 1}});
  const double submit_s = std::chrono::duration<double>(Clock::now() - t0).count();
  std::this_thread::sleep_for(300ms);
  const long rss1 = rss_kib(agent.pid());
  for (int i = 0; i < probes; ++i) {
    std::string id = fmt::format("b{}", ++seq);
    auto t = Clock::now();
    submit(probe_job(id));
    busy_http.samples.push_back(ms(probe_sock.wait(id) - t));
    std::this_thread::sleep_for(kGap);
  }
  const long rss2 = rss_kib(agent.pid());
  agent.signal(SIGTERM);
  agent.wait_exit(10s);

  // ---- task-spooler ----
  long ts_rss0 = -1, ts_rss1 = -1, ts_clients_kib = 0;
  const int ts_queued = std::min(queued, 500);
  double ts_submit_s = 0;
  if (have_tsp) {
    // Memory per queued job: one slot, held by a long job; jobs behind it. tsp keeps a
    // waiting client process per queued job (it runs the job when its turn comes): their
    // memory counts (PSS, so that shared libraries are shared out), and fewer are queued.
    run({"/usr/bin/tsp", "-S", "1"}, ts_env);
    run({"/usr/bin/tsp", "-n", "/bin/sleep", "3600"}, ts_env);
    std::this_thread::sleep_for(300ms);
    pid_t server = find_tsp_server(ts_socket);
    ts_rss0 = rss_kib(server);
    auto ts0 = Clock::now();
    for (int i = 0; i < ts_queued; ++i) run({"/usr/bin/tsp", "-n", "/bin/true"}, ts_env);
    ts_submit_s = std::chrono::duration<double>(Clock::now() - ts0).count();
    std::this_thread::sleep_for(300ms);
    ts_rss1 = rss_kib(server);
    ts_clients_kib = clients_pss_kib(ts_socket, server);
    run({"/usr/bin/tsp", "-K"}, ts_env);
    kill_environment("TS_SOCKET=" + ts_socket);  // the waiting clients and the long job
  }

  std::printf("submit-to-start (submission sent -> the job's process running):\n");
  empty_http.print("instanced, empty queue, status socket (HTTP keep-alive)");
  empty_cli.print("instanced, empty queue, instancectl job submit");
  busy_http.print(fmt::format("instanced, {} jobs queued ahead, status socket", queued).c_str());
  if (have_tsp) tsp_cli.print("tsp (task-spooler 1.0.1), empty queue, tsp -n");
  answered.print("instanced, empty queue, status socket: until the answer");
  disk_sync.print("the journal's fdatasync alone (once on each answer's path)");
  if (have_tsp)
    std::printf("  ratio socket / tsp (p50): %.2f; instancectl / tsp (p50): %.2f; median of the rounds' socket / tsp: %.2f\n\n",
                percentile(empty_http.samples, 50) / percentile(tsp_cli.samples, 50),
                percentile(empty_cli.samples, 50) / percentile(tsp_cli.samples, 50), percentile(paired, 50));
  std::printf("memory per running job: its monitor (instanced-run) RSS %ld KiB, PSS %ld KiB, private dirty %ld KiB "
              "(the rest is the binary's and the libraries' pages, shared by every monitor)\n\n",
              monitor_rss, monitor_pss, monitor_private);
  std::printf("memory per queued job (RSS of the queue's process, before and after %d jobs queued):\n", queued);
  std::printf("  instanced: %ld KiB -> %ld KiB: %.0f bytes per job (%.0f after the probes); %d submissions in %.2f s "
              "(%.0f per second, each written to disk)\n",
              rss0, rss1, (rss1 - rss0) * 1024.0 / queued, (rss2 - rss0) * 1024.0 / queued, queued, submit_s, queued / submit_s);
  if (have_tsp)
    std::printf("  tsp:       server %ld KiB -> %ld KiB, plus %ld KiB (PSS) of the %d client processes waiting: %.0f bytes "
                "per job; %d submissions in %.2f s\n",
                ts_rss0, ts_rss1, ts_clients_kib, ts_queued, ((ts_rss1 - ts_rss0) + ts_clients_kib) * 1024.0 / ts_queued,
                ts_queued, ts_submit_s);
  return 0;
}
