// The real instanced binary, started by the test, talking to a real NOTIFY_SOCKET.
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <functional>
#include <future>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <thread>

#include "tests/support/agent_process.hpp"
#include "tests/support/tmpfs.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

const char* kConfig = R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: daemon
  request_timeout: 2s
shutdown:
  timeout: 5s
debug:
  test_hooks: true
)";

json::value status_of(const AgentProcess& agent) {
  auto r = agent.curl("http://localhost/v1/status");
  REQUIRE(r.exit_code == 0);
  return json::parse(r.output);
}

}  // namespace

TEST_CASE("READY=1 comes once the status socket is bound, after STATUS=starting", "[daemon][agent]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready());
  struct stat st{};
  REQUIRE(::stat(agent.socket().c_str(), &st) == 0);
  CHECK(S_ISSOCK(st.st_mode));
  CHECK((st.st_mode & 0777) == 0660);
  CHECK(st.st_gid == 1);  // group "daemon"
  REQUIRE(agent.notifications.size() >= 2);
  CHECK(agent.notifications.front() == "STATUS=starting");
  CHECK(agent.notifications.back() == "READY=1\nSTATUS=running");
  CHECK(std::filesystem::is_directory(dir / "state"));
  // A subsystem whose first sample runs off the loop (the disk guardian's statvfs) is
  // `starting` until it is back; under a loaded CI that can outlast READY by a moment.
  json::value s;
  CHECK(eventually([&] { return (s = status_of(agent)).at("state") != "starting"; }));
  CHECK(s.at("phase") == "running");
  CHECK(s.at("state") == "ok");
  CHECK(s.at("config").at("file").as_string() == agent.config_file().string());
}

TEST_CASE("WATCHDOG=1 every half WATCHDOG_USEC, and not while the loop is stalled", "[daemon][agent][watchdog]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready(10s, {{"WATCHDOG_USEC", "400000"}}));
  // 200 ms rhythm: within 1.1 s, about five pings.
  int pings = 0;
  auto until = std::chrono::steady_clock::now() + 1100ms;
  while (std::chrono::steady_clock::now() < until)
    if (auto m = agent.notify().receive(50ms); m && *m == "WATCHDOG=1") ++pings;
  CHECK(pings >= 3);
  CHECK(pings <= 8);

  SECTION("a stalled event loop stops the pings") {
    auto stall = std::async(std::launch::async, [&] { return agent.curl("-X POST 'http://localhost/v1/debug/stall?ms=1500'"); });
    // Drain what was sent before the stall began, then expect silence.
    while (agent.notify().receive(300ms)) {
    }
    auto during = agent.notify().receive(800ms);
    CHECK_FALSE(during.has_value());
    auto r = stall.get();
    CHECK(r.output == "{\"stalled_ms\":1500}\n");
    CHECK(agent.notify().wait_for("WATCHDOG=1", 1s));  // and they resume
  }
}

TEST_CASE("SIGHUP reloads a valid configuration and keeps the old one on an invalid one", "[daemon][agent][reload]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready());
  auto hash0 = status_of(agent).at("config").at("hash").as_string();

  dir.write("instanced.yaml", expand(std::string(kConfig) + "log:\n  level: debug\ninstance:\n  name: renamed\n", dir));
  agent.signal(SIGHUP);
  std::vector<std::string> seen;
  REQUIRE(agent.notify().wait_for("READY=1", 5s, &seen));
  REQUIRE(seen.size() >= 2);
  CHECK(seen[seen.size() - 2].starts_with("RELOADING=1\nMONOTONIC_USEC="));
  auto s1 = status_of(agent);
  auto hash1 = s1.at("config").at("hash").as_string();
  CHECK(hash1 != hash0);
  CHECK(s1.at("config").at("last_reload").at("result") == "ok");
  CHECK(s1.at("instance") == "renamed");

  // A broken file: the agent keeps serving with hash1 and says why the reload failed.
  dir.write("instanced.yaml", expand(std::string(kConfig) + "log:\n  level: loud\n", dir));
  agent.signal(SIGHUP);
  seen.clear();
  REQUIRE(agent.notify().wait_for("READY=1", 5s, &seen));
  CHECK(seen.back() == "READY=1\nSTATUS=running (last reload failed, see journal)");
  auto s2 = status_of(agent);
  CHECK(s2.at("config").at("hash") == hash1);
  CHECK(s2.at("config").at("last_reload").at("result") == "failed");
  std::string error(s2.at("config").at("last_reload").at("error").as_string());
  CHECK_THAT(error, Catch::Contains(agent.config_file().string() + ":12:10: log.level: 'loud' is not one of"));
  CHECK(s2.at("subsystems").at("config").at("state") == "degraded");
  auto health = agent.curl("-o /dev/null -w '%{http_code}' http://localhost/v1/health");
  CHECK(health.output == "503");
  CHECK(agent.running());
  auto metrics = agent.curl("http://localhost/metrics").output;
  CHECK_THAT(metrics, Catch::Contains("instanced_config_reloads_total{result=\"failed\"} 1"));
  CHECK_THAT(metrics, Catch::Contains("instanced_config_reloads_total{result=\"ok\"} 1"));

  // Fixed again: healthy again.
  dir.write("instanced.yaml", expand(kConfig, dir));
  agent.signal(SIGHUP);
  REQUIRE(agent.notify().wait_for("READY=1", 5s));
  CHECK(status_of(agent).at("subsystems").at("config").at("state") == "ok");
}

TEST_CASE("SIGHUP with hostile drop-ins: refused by name, the agent keeps running and answering", "[daemon][agent][reload][hostile]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready());
  const auto d = dir / "instanced.yaml.d";
  std::filesystem::create_directories(d);
  struct Case {
    std::string name;
    std::function<void()> make;
    std::string why;
  };
  std::vector<Case> cases{
      {"loop.yaml", [&] { std::filesystem::create_symlink(d / "loop.yaml", d / "loop.yaml"); },
       "cannot open: Too many levels of symbolic links"},
      {"fifo.yaml", [&] { REQUIRE(::mkfifo((d / "fifo.yaml").c_str(), 0644) == 0); }, "not a regular file (a FIFO)"},
      {"zero.yaml", [&] { std::filesystem::create_symlink("/dev/zero", d / "zero.yaml"); },
       "not a regular file (a character device)"},
  };
  for (const auto& c : cases) {
    INFO(c.name);
    c.make();
    agent.signal(SIGHUP);
    std::vector<std::string> seen;
    // Each reload ends (READY=1 again), however hostile the file.
    REQUIRE(agent.notify().wait_for("READY=1", 10s, &seen));
    CHECK(seen.back() == "READY=1\nSTATUS=running (last reload failed, see journal)");
    auto s = status_of(agent);
    CHECK_THAT(std::string(s.at("config").at("last_reload").at("error").as_string()),
               Catch::Contains((d / c.name).string() + ": " + c.why));
    CHECK(agent.curl("-o /dev/null -w '%{http_code}' http://localhost/v1/health").output == "503");
    CHECK(agent.running());
    std::filesystem::remove(d / c.name);
  }
}

TEST_CASE("SIGTERM: STOPPING=1, a prompt clean exit, the socket removed", "[daemon][agent][shutdown]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready());
  // An idle keep-alive client must not hold up the shutdown.
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, agent.socket().c_str(), sizeof addr.sun_path - 1);
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);

  auto t0 = std::chrono::steady_clock::now();
  agent.signal(SIGTERM);
  REQUIRE(agent.notify().wait_for("STOPPING=1", 5s));
  auto code = agent.wait_exit(5s);
  auto took = std::chrono::steady_clock::now() - t0;
  ::close(fd);
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(took < std::chrono::seconds(5));  // shutdown.timeout bounds it
  CHECK_FALSE(std::filesystem::exists(agent.socket()));
  CHECK_THAT(agent.log(), Catch::Contains("received SIGTERM, shutting down"));
}

TEST_CASE("start-up refusals", "[daemon][agent]") {
  TempDir dir;
  SECTION("an invalid config exits 1 naming file, line and key") {
    AgentProcess agent(dir, "status:\n  socket: relative.sock\n");
    agent.start();
    auto code = agent.wait_exit(5s);
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK_THAT(agent.log(), Catch::Contains(agent.config_file().string() + ":2:11: status.socket: 'relative.sock' must be an absolute path"));
  }
  SECTION("a second agent on the same socket exits 1 and leaves the first serving") {
    AgentProcess first(dir, kConfig);
    REQUIRE(first.start_and_wait_ready());
    TempDir dir2;
    AgentProcess second(dir2, std::string("state_dir: ") + (dir / "state2").string() + "\nstatus:\n  socket: " +
                                  first.socket().string() + "\n");
    second.start();
    auto code = second.wait_exit(5s);
    REQUIRE(code);
    CHECK(*code == 1);
    CHECK_THAT(second.log(), Catch::Contains("another process is serving"));
    CHECK(first.curl("http://localhost/v1/health").exit_code == 0);
  }
  SECTION("a stale socket file from a crashed agent is replaced") {
    AgentProcess crashed(dir, kConfig);
    REQUIRE(crashed.start_and_wait_ready());
    crashed.signal(SIGKILL);
    REQUIRE(crashed.wait_exit(5s));
    REQUIRE(std::filesystem::exists(crashed.socket()));
    AgentProcess next(dir, kConfig);
    REQUIRE(next.start_and_wait_ready());
    CHECK(next.curl("http://localhost/v1/health").exit_code == 0);
  }
}

TEST_CASE("command line: --version, --check-config, unknown flags", "[daemon][agent][cli]") {
  TempDir dir;
  dir.write("c.yaml", expand(kConfig, dir));
  auto bin = agent_binary();
  auto v = run_command(bin + " --version");
  CHECK(v.exit_code == 0);
  // The version, then how it was built and the TLS library it runs with (linked statically
  // in the portable build, so the version is the one inside the binary).
  CHECK_THAT(v.output, Catch::Matches(std::string("instanced ") + INSTANCED_VERSION +
                                      "\nbuilt with (clang|gcc) [0-9.]+, (libc\\+\\+|libstdc\\+\\+) [0-9]+, glibc 2\\.[0-9]+\n"
                                      "OpenSSL [0-9]+\\.[0-9]+\\.[0-9]+[^\n]*\n"));

  auto c = run_command(bin + " --config " + (dir / "c.yaml").string() + " --check-config");
  CHECK(c.exit_code == 0);
  CHECK_THAT(c.output, Catch::Contains("is valid") && Catch::Contains("request_timeout: 2s"));
  // Where each setting came from: the main file, a drop-in overriding it.
  dir.write("c.yaml.d/50-jobs.yaml", "jobs:\n  slots: 3\nstatus:\n  request_timeout: 4s\n");
  auto o = run_command(bin + " --config " + (dir / "c.yaml").string() + " --check-config");
  CHECK(o.exit_code == 0);
  INFO(o.output);
  CHECK_THAT(o.output, Catch::Contains("request_timeout: 4s") && Catch::Contains("slots: 3"));
  CHECK_THAT(o.output, Catch::Contains("#   jobs.slots: " + (dir / "c.yaml.d/50-jobs.yaml").string() + "\n") &&
                           Catch::Contains("#   status.request_timeout: " + (dir / "c.yaml.d/50-jobs.yaml").string() + "\n") &&
                           Catch::Contains("#   state_dir: " + (dir / "c.yaml").string() + "\n"));
  CHECK_THAT(o.output, !Catch::Contains("#   jobs.kill_grace"));  // a default

  dir.write("bad.yaml", "status:\n  mode: rw\n");
  auto b = run_command(bin + " --config " + (dir / "bad.yaml").string() + " --check-config 2>&1");
  CHECK(b.exit_code == 1);
  CHECK_THAT(b.output, Catch::Contains("bad.yaml:2:9: status.mode:"));

  auto u = run_command(bin + " --frobnicate 2>&1");
  CHECK(u.exit_code == 2);
  CHECK_THAT(u.output, Catch::Contains("unknown argument '--frobnicate'") && Catch::Contains("usage: instanced"));
}

TEST_CASE("socket activation: the agent serves on the socket systemd passes", "[daemon][agent][activation]") {
  TempDir dir;
  // The configured path differs from the activated one: the activated socket wins.
  AgentProcess agent(dir, std::string(kConfig));
  auto activated = dir / "activated.sock";
  // systemd-socket-activate (from systemd) binds the socket and execs the agent with
  // LISTEN_FDS=1 on the first connection, as systemd does for instanced.socket.
  auto cmd = "systemd-socket-activate -l " + activated.string() + " -E NOTIFY_SOCKET=" +
             agent.notify().path().string() + " " + agent_binary() + " --config " + agent.config_file().string() +
             " > " + (dir / "activate.log").string() + " 2>&1 & echo $!";
  auto launcher = run_command(cmd);
  pid_t pid = std::stoi(launcher.output);
  CHECK(eventually([&] { return std::filesystem::exists(activated); }, 10s));
  auto r = run_command("curl -s --max-time 10 --unix-socket " + activated.string() + " http://localhost/v1/status");
  CHECK(agent.notify().wait_for("READY=1", 5s));
  ::kill(pid, SIGTERM);
  REQUIRE(r.exit_code == 0);
  auto s = json::parse(r.output);
  CHECK(s.at("subsystems").at("status").at("details").at("socket") == "(socket activation)");
  CHECK_FALSE(std::filesystem::exists(agent.socket()));
}

TEST_CASE("SIGTERM while a job waits at the closed disk gate and a start script runs: a prompt stop, the script runs on",
          "[daemon][agent][shutdown]") {
  TempDir dir;
  // A file system smaller than its recovery rule: the disk gate stays closed, the job waits.
  Tmpfs small(dir, "small", "size=4m");
  AgentProcess agent(dir, R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 30s
disk:
  scan_root: {dir}/small
  paths:
    - path: {dir}/small
      recovery: 16MiB
setup:
  log_dir: {dir}/setup-logs
  kill_grace: 5s
  scripts:
    - name: long
      when: start
      content: "echo $$ > {dir}/script-pid; exec sleep 600"
jobs:
  log_dir: {dir}/job-logs
gpu:
  enabled: false
)");
  REQUIRE(agent.start_and_wait_ready());
  auto submitted = agent.curl(R"(-s -X POST -d '{"id":"j1","command":["/bin/true"]}' http://localhost/v1/jobs)");
  REQUIRE(submitted.output.find("queued") != std::string::npos);
  CHECK(eventually([&] { return !slurp(dir / "script-pid").empty(); }, 10s));
  const pid_t script = std::atoi(slurp(dir / "script-pid").c_str());
  REQUIRE(script > 0);
  auto jobs = json::parse(agent.curl("http://localhost/v1/jobs").output);
  REQUIRE(jobs.at("queued_count") == 1);

  agent.signal(SIGTERM);
  // Nothing to flush: far less than the 30 s of shutdown.timeout (before the fix the job
  // queue, waiting at the gate, took all of it).
  auto code = agent.wait_exit(15s);
  REQUIRE(code);
  CHECK(*code == 0);
  const std::string log = agent.log();
  CHECK_THAT(log, !Catch::Contains("did not stop") && !Catch::Contains("still running"));
  // The script runs on under its monitor (docs/setup.md): the agent's stop stops nothing.
  CHECK_THAT(log, Catch::Contains("script long runs on under its monitor while the agent is stopped"));
  CHECK(::kill(script, 0) == 0);
}

TEST_CASE("the previous run's end is reported at the next start when it did not stop cleanly",
          "[daemon][agent][run_record]") {
  TempDir dir;
  auto previous_run_events = [](const AgentProcess& agent) {
    std::vector<json::value> found;
    auto status = status_of(agent);
    for (const auto& e : status.at("events").as_array())
      if (e.at("type") == "previous_run_ended") found.push_back(e);
    return found;
  };
  {
    AgentProcess agent(dir, kConfig);
    REQUIRE(agent.start_and_wait_ready());
    CHECK(previous_run_events(agent).empty());  // the first start
    agent.signal(SIGKILL);
    REQUIRE(agent.wait_exit(5s));
  }
  SECTION("kill -9 outside systemd: reported, with no account of how") {
    AgentProcess agent(dir, kConfig);
    REQUIRE(agent.start_and_wait_ready());  // the event is raised before READY=1
    auto found = previous_run_events(agent);
    REQUIRE(found.size() == 1);
    CHECK(found[0].at("subsystem") == "daemon");
    CHECK_THAT(std::string(found[0].at("message").as_string()),
               Catch::Contains("did not stop cleanly: no account of its end"));
    CHECK(found[0].at("data").at("rebooted") == false);
    // A clean stop: the start after it reports nothing.
    agent.signal(SIGTERM);
    REQUIRE(agent.wait_exit(10s) == 0);
    AgentProcess again(dir, kConfig);
    REQUIRE(again.start_and_wait_ready());
    CHECK(previous_run_events(again).empty());
  }
  SECTION("under systemd, ExecStopPost's --record-exit says how it ended") {
    auto r = run_command("SERVICE_RESULT=signal EXIT_CODE=killed EXIT_STATUS=KILL " + agent_binary() +
                         " --config " + (dir / "instanced.yaml").string() + " --record-exit");
    REQUIRE(r.exit_code == 0);
    AgentProcess agent(dir, kConfig);
    REQUIRE(agent.start_and_wait_ready());
    auto found = previous_run_events(agent);
    REQUIRE(found.size() == 1);
    CHECK_THAT(std::string(found[0].at("message").as_string()),
               Catch::Contains("did not stop cleanly: killed by signal KILL (systemd: signal)"));
    CHECK(found[0].at("data").at("exit").at("exit_status") == "KILL");
  }
}
