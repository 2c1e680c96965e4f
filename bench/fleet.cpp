// bench/fleet: N agent sessions (the agent's own ControlChannel, N virtual instances in
// one process, one event loop) against the development control plane on loopback.
// Prints sessions held, agent CPU per heartbeat, bytes per heartbeat, RSS per session,
// and the reconnect curve after the control plane restarts. Asserts nothing.
//
// usage: fleet [--sessions N] [--seconds S] [--spread S] [--no-ack]
//   --no-ack:  the control plane does not acknowledge heartbeats (the cost of the acks)
//   --seconds: the measuring window with every session connected (default 30)
//   --spread:  initial_delay_max, the random delay before each first connect (default 10)
#include <algorithm>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json/serialize.hpp>
#include <csignal>
#include <cstdio>
#include <fcntl.h>
#include <fstream>
#include <map>
#include <sys/resource.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "agent/control/channel.hpp"
#include "agent/control/commands.hpp"
#include "agent/control/protocol.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace std::chrono;
namespace asio = boost::asio;

namespace {

Duration seconds_cast(int s) { return std::chrono::seconds(s); }

class NullNotifier final : public Notifier {
 public:
  void notify(std::string_view) override {}
  std::optional<microseconds> watchdog_timeout() override { return std::nullopt; }
};

struct Instance {
  Instance(asio::io_context& ioc, Clock& clock, Filesystem& fs, Notifier& n, BlockingPool& pool, Logging& logging,
           const ControlConfig& config, const std::string& state_dir, int i)
      : state(clock),
        api{clock, fs, n, pool, state, logging},
        commands(clock, fs, std::filesystem::path(state_dir) / "commands.json") {
    info.version = INSTANCED_VERSION;
    info.instance = "fleet-" + std::to_string(i);
    info.phase = "running";
    info.started = clock.now();
    info.config_hash = std::string(64, 'a');
    state.publish("status", Health::ok, "serving");
    channel = std::make_unique<control::ControlChannel>(ioc.get_executor(), api, config, ProxyConfig{}, state_dir, commands, info);
  }
  StateRegistry state;
  Api api;
  status::AgentInfo info;
  control::CommandRegistry commands;
  std::unique_ptr<control::ControlChannel> channel;
};

double cpu_seconds() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return static_cast<double>(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

double rss_mib() {
  // statm: sizes in pages; the second field is the resident set.
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f) return -1;
  unsigned long size = 0, resident = 0;
  int n = std::fscanf(f, "%lu %lu", &size, &resident);
  std::fclose(f);
  return n == 2 ? static_cast<double>(resident) * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0) : -1;
}

bool g_no_ack = false;  // --no-ack: the control plane does not acknowledge heartbeats

pid_t start_devcp(const testing::TempDir& dir, const std::string& listen) {
  std::filesystem::remove(dir / "ports");
  std::vector<std::string> args{DEVCP_BIN, "--token-file", (dir / "token").string(), "--listen", listen, "--ports-file",
                                (dir / "ports").string(), "--quiet"};
  if (g_no_ack) args.push_back("--no-heartbeat-ack");
  pid_t pid = testing::spawn(args, "/dev/null");
  for (int i = 0; i < 500 && !std::filesystem::exists(dir / "ports"); ++i) std::this_thread::sleep_for(10ms);
  std::this_thread::sleep_for(20ms);
  return pid;
}

}  // namespace

int main(int argc, char** argv) {
  int sessions = 10000, seconds = 30, spread = 10;
  for (int i = 1; i < argc; ++i)
    if (std::string(argv[i]) == "--no-ack") g_no_ack = true;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string a = argv[i];
    if (a == "--no-ack") {
      --i;
      continue;
    }
    if (a == "--sessions") sessions = std::stoi(argv[i + 1]);
    else if (a == "--seconds") seconds = std::stoi(argv[i + 1]);
    else if (a == "--spread") spread = std::stoi(argv[i + 1]);
  }
  std::setvbuf(stdout, nullptr, _IOLBF, 0);
  rlimit nofile{1 << 20, 1 << 20};
  if (setrlimit(RLIMIT_NOFILE, &nofile) != 0) {
    nofile = {200000, 200000};
    setrlimit(RLIMIT_NOFILE, &nofile);
  }

  testing::TempDir dir;
  dir.write("token", "fleet-token\n");
  std::filesystem::permissions(dir / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  pid_t cp = start_devcp(dir, "127.0.0.1:0");
  int port = 0;
  std::ifstream(dir / "ports") >> port;

  asio::io_context ioc(1);
  RealClock clock;
  RealFilesystem fs;
  NullNotifier notifier;
  BlockingPool pool(1);
  Logging logging(LogTarget::stderr_lines, LogLevel::error);
  ControlConfig config;
  config.endpoint = "ws://127.0.0.1:" + std::to_string(port) + "/v1/agent";
  config.insecure = true;
  config.token_file = (dir / "token").string();
  config.initial_delay_max = seconds_cast(spread);
  config.backoff_initial = std::chrono::seconds(1);
  config.backoff_max = std::chrono::seconds(30);

  double rss0 = rss_mib();
  std::vector<std::unique_ptr<Instance>> fleet;
  fleet.reserve(static_cast<std::size_t>(sessions));
  for (int i = 0; i < sessions; ++i) {
    const std::string state_dir = (dir / ("i" + std::to_string(i))).string();
    fleet.push_back(std::make_unique<Instance>(ioc, clock, fs, notifier, pool, logging, config, state_dir, i));
  }
  for (auto& in : fleet) asio::co_spawn(ioc, in->channel->run(), asio::detached);

  auto state_of = [](const Instance& in) -> std::string {
    auto it = in.state.subsystems().find("control");
    if (it == in.state.subsystems().end()) return "";
    return std::string(it->second.details.at("state").as_string());
  };
  auto connected = [&] {
    int n = 0;
    for (auto& in : fleet) n += state_of(*in) == "connected";
    return n;
  };
  auto heartbeats = [&] {
    double n = 0;
    for (auto& in : fleet) n += in->state.metrics().value("instanced_control_heartbeats_total");
    return n;
  };
  auto run_for = [&](steady_clock::duration d) { ioc.run_for(duration_cast<steady_clock::duration>(d)); };

  // Phase 1: connect everyone (spread over `spread` seconds).
  auto t0 = steady_clock::now();
  while (connected() < sessions && steady_clock::now() - t0 < seconds_cast(spread + 60)) run_for(500ms);
  int held = connected();
  std::printf("sessions: %d asked, %d connected after %.1f s (initial_delay_max %d s)\n", sessions, held,
              duration<double>(steady_clock::now() - t0).count(), spread);

  // Phase 2: steady state, heartbeats only.
  double cpu0 = cpu_seconds(), hb0 = heartbeats();
  run_for(seconds_cast(seconds));
  double cpu1 = cpu_seconds(), hb1 = heartbeats();
  double beats = hb1 - hb0;
  std::string sample = control::encode(control::Message{"heartbeat", control::new_id(), std::nullopt,
                                                        iso8601(clock.wall_now()), fleet[0]->channel->heartbeat_body()});
  std::vector<double> rtts;
  for (auto& in : fleet)
    if (auto r = in->channel->heartbeat_rtt()) rtts.push_back(duration<double, std::micro>(*r).count());
  std::sort(rtts.begin(), rtts.end());
  auto pct = [&](double p) { return rtts.empty() ? 0.0 : rtts[std::min(rtts.size() - 1, static_cast<std::size_t>(p * rtts.size()))]; };
  std::printf("heartbeat round trip (last per session, %zu sessions): p50 %.0f us, p99 %.0f us\n", rtts.size(),
              pct(0.50), pct(0.99));
  std::size_t frame = sample.size() + (sample.size() < 126 ? 2 : 4) + 4;  // WebSocket header + client mask
  std::printf("steady %d s: %.0f heartbeats (%.0f/s), agent CPU %.2f s = %.1f us per heartbeat\n", seconds, beats,
              beats / seconds, cpu1 - cpu0, beats > 0 ? (cpu1 - cpu0) / beats * 1e6 : 0.0);
  std::printf("bytes per heartbeat on the wire: %zu (JSON %zu + WebSocket framing)\n", frame, sample.size());
  double rss1 = rss_mib();
  std::printf("RSS: %.1f MiB before, %.1f MiB with %d sessions = %.1f KiB per session\n", rss0, rss1, held,
              held > 0 ? (rss1 - rss0) * 1024 / held : 0.0);

  // Phase 3: restart the control plane; record when each session reconnects.
  std::map<std::string, std::string> before;
  for (auto& in : fleet) before[in->info.instance] = boost::json::serialize(in->state.subsystems().at("control").details.at("connects"));
  ::kill(cp, SIGTERM);
  waitpid(cp, nullptr, 0);
  auto down = steady_clock::now();
  run_for(2s);
  cp = start_devcp(dir, "127.0.0.1:" + std::to_string(port));
  auto up = steady_clock::now();
  std::vector<double> when;
  std::vector<bool> seen(fleet.size(), false);
  while (static_cast<int>(when.size()) < held && steady_clock::now() - up < 120s) {
    run_for(100ms);
    for (std::size_t i = 0; i < fleet.size(); ++i) {
      if (seen[i]) continue;
      const auto& d = fleet[i]->state.subsystems().at("control").details;
      if (d.at("state") == "connected" && boost::json::serialize(d.at("connects")) != before[fleet[i]->info.instance]) {
        seen[i] = true;
        when.push_back(duration<double>(steady_clock::now() - up).count());
      }
    }
  }
  std::sort(when.begin(), when.end());
  std::map<int, int> per_second;
  for (double w : when) per_second[static_cast<int>(w)]++;
  int peak = 0;
  for (auto& [s, n] : per_second) peak = std::max(peak, n);
  double span = when.empty() ? 0 : std::max(1.0, when.back());
  double uniform = when.empty() ? 0 : when.size() / span;
  std::printf("reconnect after a %.1f s outage: %zu sessions back within %.1f s; peak %d connects in one second, "
              "uniform would be %.0f/s: %.2fx\n",
              duration<double>(up - down).count(), when.size(), span, peak, uniform, uniform > 0 ? peak / uniform : 0.0);
  std::printf("reconnect curve (second: connects):");
  for (auto& [s, n] : per_second) std::printf(" %d:%d", s, n);
  std::printf("\ntargets: 10000 sessions, <= 512 bytes per heartbeat, <= 20 us CPU per heartbeat, reconnect peak <= 2x uniform\n");
  ::kill(cp, SIGTERM);
  waitpid(cp, nullptr, 0);
  ioc.stop();
  std::error_code ignored;
  std::filesystem::remove_all(dir.path(), ignored);  // _Exit skips the TempDir's own cleanup
  std::_Exit(0);  // skip tearing down N sessions one by one
}
