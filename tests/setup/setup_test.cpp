// Setup scripts, run by the real agent: real scripts, real processes, real restarts.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/sanitizers.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

std::string config_with(const std::string& setup_yaml) {
  return R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 5s
setup:
  log_dir: {dir}/logs
  kill_grace: 500ms
)" + setup_yaml;
}

json::value setup_of(const AgentProcess& agent) {
  auto r = agent.curl("http://localhost/v1/setup");
  REQUIRE(r.exit_code == 0);
  return json::parse(r.output);
}

std::string phase(const json::value& v) { return std::string(v.at("phase").as_string()); }

// Polls /v1/setup until the sequence settles (done or failed).
json::value wait_settled(const AgentProcess& agent, std::chrono::milliseconds timeout = 20s) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto v = setup_of(agent);
    if ((phase(v) == "done" || phase(v) == "failed") && !v.as_object().contains("running")) return v;
    if (std::chrono::steady_clock::now() > deadline) {
      FAIL("setup did not settle: " << json::serialize(v) << "\n" << agent.log());
    }
    std::this_thread::sleep_for(50ms);
  }
}

json::value script(const json::value& setup, const std::string& name) {
  for (const auto& s : setup.at("scripts").as_array())
    if (s.at("name").as_string() == name) return s;
  FAIL("no script " << name);
  return {};
}

std::string state(const json::value& setup, const std::string& name) {
  return std::string(script(setup, name).at("state").as_string());
}


// The processes of this test's script `name`: their environment has INSTANCED_SCRIPT=name
// and this test's status socket (other tests' scripts may have the same name), from /proc.
std::vector<pid_t> processes_of_script(const TempDir& dir, const std::string& name) {
  std::vector<pid_t> out;
  const std::string marker = "INSTANCED_SCRIPT=" + name;
  const std::string socket = "INSTANCED_SOCKET=" + (dir / "status.sock").string();
  DIR* d = ::opendir("/proc");
  while (dirent* e = ::readdir(d)) {
    char* end = nullptr;
    long pid = std::strtol(e->d_name, &end, 10);
    if (*end || pid <= 0) continue;
    std::string env = slurp(fmt::format("/proc/{}/environ", pid));
    bool named = false, ours = false;
    for (std::size_t p = 0; p < env.size();) {
      auto q = env.find('\0', p);
      if (q == std::string::npos) q = env.size();
      named = named || env.compare(p, q - p, marker) == 0;
      ours = ours || env.compare(p, q - p, socket) == 0;
      p = q + 1;
    }
    if (named && ours) out.push_back(static_cast<pid_t>(pid));
  }
  ::closedir(d);
  return out;
}

std::string process_state(pid_t pid) {
  std::string s = slurp(fmt::format("/proc/{}/stat", pid));
  auto p = s.rfind(')');
  return p == std::string::npos ? "" : s.substr(p + 2, 1);
}

std::string log_of(const AgentProcess& agent, const std::string& name) {
  auto r = run_command(fmt::format("{} --socket {} setup logs {}", instancectl_binary(), agent.socket().string(), name));
  return r.output;
}

}  // namespace

TEST_CASE("scripts run in config order, success and failure are recorded with exit status and log",
          "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: first
      content: |
        echo "first as $(id -un) in $PWD: $INSTANCED_SCRIPT $INSTANCED_SCRIPT_WHEN" > {dir}/order
        echo visible
    - name: second
      path: /bin/sh
      args: [-c, 'echo second >> {dir}/order; echo to-stderr >&2; exit 3']
      continue_on_error: true
    - name: third
      content: |
        #!/bin/bash
        echo "third $GREETING $#:$1" >> {dir}/order
      args: [arg-one]
      environment: {GREETING: hello}
      working_directory: /tmp
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto v = wait_settled(agent);
  CHECK(phase(v) == "done");  // second failed, but continue_on_error
  CHECK(state(v, "first") == "succeeded");
  CHECK(state(v, "second") == "failed");
  CHECK(state(v, "third") == "succeeded");
  auto second = script(v, "second").at("last_run");
  CHECK(second.at("exit_code") == 3);
  CHECK(second.at("reason") == "exit status 3");
  CHECK(slurp(dir / "order") == "first as root in /root: first start\nsecond\nthird hello 1:arg-one\n");
  CHECK(log_of(agent, "first") == "visible\n");
  CHECK(log_of(agent, "second") == "to-stderr\n");
  // Lines reach the agent's log (the journal, under systemd) with the script's name.
  CHECK_THAT(agent.log(), Catch::Contains("[second] to-stderr"));
  auto status = json::parse(agent.curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("setup").at("state") == "ok");
  // The finished event carries the state and the last lines.
  bool found = false;
  for (const auto& e : status.at("events").as_array())
    if (e.at("type") == "script_finished" && e.at("data").at("name") == "second") {
      found = true;
      CHECK(e.at("data").at("state") == "failed");
      CHECK(e.at("data").at("tail").as_array().back() == "to-stderr");
    }
  CHECK(found);
}

TEST_CASE("a failed script stops the sequence until it is rerun, and the rerun continues it", "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: flaky
      content: |
        test -e {dir}/fixed || { echo "not yet"; exit 7; }
        echo fixed
    - name: after
      content: touch {dir}/after-ran
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto v = wait_settled(agent);
  CHECK(phase(v) == "failed");
  CHECK(state(v, "flaky") == "failed");
  CHECK(state(v, "after") == "pending");
  CHECK_FALSE(std::filesystem::exists(dir / "after-ran"));
  auto status = json::parse(agent.curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("setup").at("state") == "degraded");
  CHECK_THAT(std::string(status.at("subsystems").at("setup").at("summary").as_string()),
             Catch::Contains("script flaky failed: exit status 7; rerun with 'instancectl setup rerun flaky'"));
  auto ctl = run_command(fmt::format("{} --socket {} setup", instancectl_binary(), agent.socket().string()));
  CHECK(ctl.exit_code == 1);
  CHECK_THAT(ctl.output, Catch::Contains("flaky  start   failed       20"));

  std::ofstream(dir / "fixed").put('\n');
  auto rerun = run_command(fmt::format("{} --socket {} setup rerun flaky", instancectl_binary(), agent.socket().string()));
  CHECK(rerun.exit_code == 0);
  v = wait_settled(agent);
  CHECK(phase(v) == "done");
  CHECK(state(v, "flaky") == "succeeded");
  CHECK(script(v, "flaky").at("runs") == 2);
  CHECK(std::filesystem::exists(dir / "after-ran"));
  auto unknown = run_command(fmt::format("{} --socket {} setup rerun nosuch 2>&1", instancectl_binary(), agent.socket().string()));
  CHECK(unknown.exit_code == 3);  // the agent refused the request
  CHECK_THAT(unknown.output, Catch::Contains("no setup script named 'nosuch' (HTTP 404)"));
}

TEST_CASE("a script that never ends is timed out and its whole process group killed", "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: forever
      timeout: 1s
      content: |
        trap '' TERM          # ignores SIGTERM: needs the SIGKILL
        sleep 1000 & sleep 1000 &
        setsid sleep 1000 &   # left the group: found by its marker
        echo started
        wait
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto t0 = std::chrono::steady_clock::now();
  auto v = wait_settled(agent);
  auto took = std::chrono::steady_clock::now() - t0;
  CHECK(state(v, "forever") == "timed_out");
  CHECK(phase(v) == "failed");
  CHECK_THAT(std::string(script(v, "forever").at("last_run").at("reason").as_string()),
             Catch::Contains("timed out after 1s"));
  CHECK(took < 6s);
  // Nothing of it is left: no process with its marker, no zombie.
  std::this_thread::sleep_for(200ms);
  CHECK(processes_of_script(dir, "forever").empty());
  CHECK(log_of(agent, "forever") == "started\n");
}

TEST_CASE("a daemon that keeps the output pipe open does not hold up the script's end", "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: keeps
      content: |
        sleep 1000 &          # holds stdout open
        echo kept
    - name: kills
      leftover_processes: kill
      content: |
        sleep 1000 &
        setsid sleep 1000 &
        echo killed
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto v = wait_settled(agent, 10s);
  CHECK(state(v, "keeps") == "succeeded");
  CHECK(state(v, "kills") == "succeeded");
  CHECK(script(v, "keeps").at("last_run").at("duration_seconds").to_number<double>() < 2.0);
  CHECK(script(v, "kills").at("last_run").at("leftovers").as_array().size() == 2);
  // leftover_processes: keep — the daemon runs on, re-parented from its monitor to the agent
  // (both subreapers).
  auto kept = processes_of_script(dir, "keeps");
  REQUIRE(kept.size() == 1);
  auto st = slurp(fmt::format("/proc/{}/status", kept[0]));
  CHECK_THAT(st, Catch::Contains(fmt::format("PPid:\t{}\n", agent.pid())));
  CHECK(processes_of_script(dir, "kills").empty());
  // When the kept daemon dies, the agent reaps it: no zombie stays behind.
  ::kill(kept[0], SIGKILL);
  std::this_thread::sleep_for(300ms);
  CHECK((process_state(kept[0]).empty() || process_state(kept[0]) != "Z"));
  CHECK(log_of(agent, "keeps") == "kept\n");
}

TEST_CASE("1 GiB of output: the log is capped at head and tail, the agent's and the monitor's memory stay flat", "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  max_log_bytes: 1MiB
  scripts:
    - name: loud
      timeout: 5m
      content: |
        echo FIRST-LINE
        head -c 1073741824 /dev/zero | tr '\0' 'y' | fold -w 99
        echo
        echo LAST-LINE
)"));
  REQUIRE(agent.start_and_wait_ready());
  // The monitor's peak resident memory, last seen while the script runs.
  long monitor_hwm = 0;
  auto peak = [&](pid_t pid) {
    auto status = slurp(fmt::format("/proc/{}/status", pid));
    auto at = status.find("VmHWM:");
    return at == std::string::npos ? 0L : std::stol(status.substr(at + 6));
  };
  auto sample = [&] {
    for (const auto& e : std::filesystem::directory_iterator(dir / "state" / "setup"))
      if (e.path().extension() == ".run" && std::filesystem::exists(e.path() / "monitor.json")) {
        auto pid = json::parse(slurp(e.path() / "monitor.json")).at("pid").as_int64();
        monitor_hwm = std::max(monitor_hwm, peak(static_cast<pid_t>(pid)));
      }
    auto v = setup_of(agent);
    return phase(v) == "done" || phase(v) == "failed";
  };
  REQUIRE(eventually(sample, 110s));
  auto v = wait_settled(agent, 10s);
  REQUIRE(state(v, "loud") == "succeeded");
  auto last = script(v, "loud").at("last_run");
  std::string file(last.at("log").as_string());
  auto size = std::filesystem::file_size(file);
  CHECK(size < (1 << 20) + 200);
  CHECK(size >= (1 << 20));
  std::string text = slurp(file);
  CHECK(text.starts_with("FIRST-LINE\n"));
  CHECK(text.ends_with("\nLAST-LINE\n"));
  CHECK_THAT(text, Catch::Contains("bytes of output cut here"));
  CHECK(last.at("layout").at("produced").to_number<double>() > 1073741824.0);
  // Peak resident memory of the agent over the whole run, and of the monitor that held the output.
  const long hwm = peak(agent.pid());
  INFO("agent VmHWM " << hwm << " kB, monitor VmHWM " << monitor_hwm << " kB");
  CHECK(monitor_hwm > 0);  // seen while it ran
#if defined(INSTANCED_ASAN)
  // ASan's shadow memory and quarantine make resident size meaningless here.
  (void)hwm;
#else
  CHECK(hwm < 40 * 1024);
  CHECK(monitor_hwm < 16 * 1024);
#endif
  // What reached the journal is bounded by the cap too.
  CHECK(agent.log().size() < (2 << 20));
  CHECK_THAT(agent.log(), Catch::Contains("further output is not sent to the journal"));
}

TEST_CASE("binary output, stdin, missing and non-executable scripts, another user", "[setup][agent]") {
  TempDir dir;
  dir.write("not-exec.sh", "#!/bin/sh\necho never\n");
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: binary
      continue_on_error: true
      content: printf 'ok\377\376\001end\n'
    - name: reads-stdin
      continue_on_error: true
      content: |
        cat; read line; echo "read=$?"
    - name: missing
      path: /nonexistent/setup.sh
      continue_on_error: true
    - name: not-exec
      path: {dir}/not-exec.sh
      continue_on_error: true
    - name: as-nobody
      user: nobody
      content: |
        echo "$(id -u) $(id -g) $HOME $USER"
    - name: no-such-user
      user: no-such-user-here
      path: /bin/true
      continue_on_error: true
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto v = wait_settled(agent);
  CHECK(state(v, "binary") == "succeeded");
  CHECK(log_of(agent, "binary") == "ok\377\376\001end\n");  // the file keeps the bytes
  CHECK_THAT(agent.log(), Catch::Contains("[binary] ok\\xff\\xfe\\x01end"));
  CHECK(state(v, "reads-stdin") == "succeeded");
  CHECK(log_of(agent, "reads-stdin") == "read=1\n");
  CHECK(state(v, "missing") == "failed");
  CHECK(script(v, "missing").at("last_run").at("reason") ==
        "cannot run /nonexistent/setup.sh: No such file or directory (exec)");
  CHECK(state(v, "not-exec") == "failed");
  CHECK_THAT(std::string(script(v, "not-exec").at("last_run").at("reason").as_string()),
             Catch::Contains("Permission denied (exec)"));
  CHECK(state(v, "as-nobody") == "succeeded");
  CHECK(log_of(agent, "as-nobody") == "65534 65534 /nonexistent nobody\n");
  CHECK(state(v, "no-such-user") == "failed");
  CHECK(script(v, "no-such-user").at("last_run").at("reason") == "user 'no-such-user-here' does not exist");
  // The whole answer stayed valid JSON (the parse above) with the binary bytes escaped.
  CHECK(phase(v) == "done");
}

TEST_CASE("create scripts run once per instance and start scripts once per boot", "[setup][agent]") {
  TempDir dir;
  const std::string yaml = config_with(R"(
  scripts:
    - name: once
      when: create
      content: echo x >> {dir}/create-count
    - name: every-boot
      when: start
      content: echo x >> {dir}/start-count
)");
  dir.write("boot_id", "11111111-1111-1111-1111-111111111111\n");
  // A fake boot id, bind-mounted over the real one in a mount namespace of the agent's own.
  auto boot = [&](const std::string& id) {
    dir.write("boot_id", id + "\n");
    return std::vector<std::string>{"/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
                                    "mount --bind \"$0\" /proc/sys/kernel/random/boot_id && exec \"$@\"",
                                    (dir / "boot_id").string()};
  };
  {
    AgentProcess agent(dir, yaml);
    agent.wrapper = boot("11111111-1111-1111-1111-111111111111");
    REQUIRE(agent.start_and_wait_ready());
    CHECK(phase(wait_settled(agent)) == "done");
    agent.signal(SIGTERM);
    REQUIRE(agent.wait_exit(10s) == 0);
  }
  {  // an agent restart in the same boot: nothing runs again
    AgentProcess agent(dir, yaml);
    agent.wrapper = boot("11111111-1111-1111-1111-111111111111");
    REQUIRE(agent.start_and_wait_ready());
    auto v = wait_settled(agent);
    CHECK(state(v, "once") == "succeeded");
    CHECK(state(v, "every-boot") == "succeeded");
    agent.signal(SIGTERM);
    REQUIRE(agent.wait_exit(10s) == 0);
  }
  CHECK(slurp(dir / "create-count") == "x\n");
  CHECK(slurp(dir / "start-count") == "x\n");
  {  // a new boot: the start script again, the create script not
    AgentProcess agent(dir, yaml);
    agent.wrapper = boot("22222222-2222-2222-2222-222222222222");
    REQUIRE(agent.start_and_wait_ready());
    auto v = wait_settled(agent);
    CHECK(v.at("boot_id") == "22222222-2222-2222-2222-222222222222");
    CHECK(script(v, "every-boot").at("runs") == 2);
    CHECK(script(v, "once").at("runs") == 1);
  }
  CHECK(slurp(dir / "create-count") == "x\n");
  CHECK(slurp(dir / "start-count") == "x\nx\n");
}

// The issue's survival test (docs/setup.md), shortened: a script writing a line a second
// for 8 s, the agent stopped (SIGTERM) or killed (SIGKILL) while it runs and started again
// once the script has gone on without it.
TEST_CASE("a running script outlives the agent's stop or crash, is taken back and its outcome recorded once",
          "[setup][agent][monitor]") {
  const int sig = GENERATE(SIGTERM, SIGKILL);
  INFO("agent ended by signal " << sig);
  TempDir dir;
  const std::string yaml = config_with(R"(
  scripts:
    - name: slow
      when: create
      content: |
        echo run >> {dir}/runs
        for i in 1 2 3 4 5 6 7 8; do echo line $i; sleep 1; done
    - name: after
      when: create
      content: echo after >> {dir}/runs
)");
  {
    AgentProcess agent(dir, yaml);
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(eventually([&] { return log_of(agent, "slow").starts_with("line 1\n"); }, 10s));
    agent.signal(sig);
    REQUIRE(agent.wait_exit(10s));
  }
  REQUIRE_FALSE(processes_of_script(dir, "slow").empty());  // the script goes on
  // Its monitor writes its log while the agent is away.
  auto log_file = [&] {
    for (const auto& e : std::filesystem::directory_iterator(dir / "logs" / "slow")) return e.path();
    return std::filesystem::path();
  };
  REQUIRE(eventually([&] { return slurp(log_file()).find("line 4\n") != std::string::npos; }, 15s));
  AgentProcess agent(dir, yaml);
  REQUIRE(agent.start_and_wait_ready());
  CHECK(agent.wait_log("script slow: still running under its monitor"));
  auto v = wait_settled(agent, 20s);
  CHECK(state(v, "slow") == "succeeded");
  CHECK(script(v, "slow").at("runs") == 1);
  CHECK(script(v, "slow").at("last_run").at("duration_seconds").to_number<double>() >= 7.0);
  CHECK(slurp(dir / "runs") == "run\nafter\n");  // not run again; the next one after it
  std::string all;
  for (int i = 1; i <= 8; ++i) all += fmt::format("line {}\n", i);
  CHECK(log_of(agent, "slow") == all);
  const std::string logged = agent.log();
  std::size_t told = 0;
  for (auto p = logged.find("script slow succeeded"); p != std::string::npos; p = logged.find("script slow succeeded", p + 1))
    ++told;
  CHECK(told == 1);
  CHECK_THAT(logged, !Catch::Contains("interrupted"));
  for (const auto& e : std::filesystem::directory_iterator(dir / "state" / "setup"))
    CHECK(e.path().extension() != ".run");  // its run folder (its environment) is gone
}

TEST_CASE("a script whose monitor dies with the agent down is interrupted: what is left is killed, the policy applied",
          "[setup][agent][monitor]") {
  TempDir dir;
  auto yaml = [&](const std::string& policy) {
    return config_with("  interrupted: " + policy + R"(
  scripts:
    - name: slow
      when: create
      content: |
        echo run >> {dir}/runs
        test -e {dir}/quick && exit 0
        echo started; sleep 1000
)");
  };
  // Kills the agent mid-run, then the script's monitor: its pid.
  auto kill_both = [&](AgentProcess& agent) {
    agent.signal(SIGKILL);
    agent.wait_exit(5s);
    std::filesystem::path run;
    for (const auto& e : std::filesystem::directory_iterator(dir / "state" / "setup"))
      if (e.path().extension() == ".run") run = e.path();
    REQUIRE_FALSE(run.empty());
    REQUIRE(eventually([&] { return std::filesystem::exists(run / "monitor.json"); }));
    const auto monitor = static_cast<pid_t>(json::parse(slurp(run / "monitor.json")).at("pid").as_int64());
    REQUIRE(::kill(monitor, SIGKILL) == 0);
    REQUIRE(eventually([&] { return process_state(monitor).empty() || process_state(monitor) == "Z"; }));
    return monitor;
  };
  pid_t monitor = 0;
  {
    AgentProcess agent(dir, yaml("fail"));
    REQUIRE(agent.start_and_wait_ready());
    CHECK(eventually([&] { return log_of(agent, "slow") == "started\n"; }, 10s));
    REQUIRE(log_of(agent, "slow") == "started\n");
    monitor = kill_both(agent);
  }
  REQUIRE(processes_of_script(dir, "slow").size() == 2);  // the shell and its sleep live on
  {
    AgentProcess agent(dir, yaml("fail"));
    REQUIRE(agent.start_and_wait_ready());
    auto v = wait_settled(agent);
    CHECK(state(v, "slow") == "interrupted");
    CHECK_THAT(std::string(script(v, "slow").at("last_run").at("reason").as_string()),
               Catch::Contains(fmt::format("its monitor (pid {}) ended without recording how the workload ended; "
                                           "2 of its processes were still running and were killed",
                                           monitor)));
    CHECK(processes_of_script(dir, "slow").empty());
    CHECK(slurp(dir / "runs") == "run\n");  // not run again
    agent.signal(SIGTERM);
    REQUIRE(agent.wait_exit(10s) == 0);
  }
  // Rerun by hand, killed again mid-run; with `interrupted: rerun` the next start runs it again.
  {
    AgentProcess agent(dir, yaml("fail"));
    REQUIRE(agent.start_and_wait_ready());
    wait_settled(agent);
    auto rerun = run_command(fmt::format("{} --socket {} setup rerun slow", instancectl_binary(), agent.socket().string()));
    REQUIRE(rerun.exit_code == 0);
    CHECK(eventually([&] { return processes_of_script(dir, "slow").size() >= 2; }, 10s));
    kill_both(agent);
  }
  std::ofstream(dir / "quick").put('\n');
  {
    AgentProcess agent(dir, yaml("rerun"));
    REQUIRE(agent.start_and_wait_ready());
    auto v = wait_settled(agent);
    CHECK(state(v, "slow") == "succeeded");
    CHECK(script(v, "slow").at("runs") == 3);
    CHECK(slurp(dir / "runs") == "run\nrun\nrun\n");
    CHECK(processes_of_script(dir, "slow").empty());
  }
}

TEST_CASE("a damaged state file stops setup with a clear reason instead of running scripts again",
          "[setup][agent]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "state" / "setup");
  dir.write("state/setup/state.json", "{\"version\":1,\"scripts\":{\"x\":{\"state\":\"bogus\"}}}");
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: once
      when: create
      content: touch {dir}/ran
)"));
  REQUIRE(agent.start_and_wait_ready());
  auto v = wait_settled(agent);
  CHECK(phase(v) == "failed");
  CHECK_THAT(std::string(v.at("error").as_string()),
             Catch::Contains("state/setup/state.json: scripts.x.state: 'bogus' is not a state; no script runs"));
  CHECK_FALSE(std::filesystem::exists(dir / "ran"));
}

TEST_CASE("instancectl setup logs --follow shows the output while the script runs, to its end",
          "[setup][agent]") {
  TempDir dir;
  AgentProcess agent(dir, config_with(R"(
  scripts:
    - name: slow-talker
      content: |
        for i in 1 2 3 4 5; do echo "step $i"; sleep 0.3; done
)"));
  REQUIRE(agent.start_and_wait_ready());
  // Starts following while the script runs; returns when the run has ended.
  CHECK(eventually([&] { return setup_of(agent).as_object().count("running") != 0; }, 10s));
  REQUIRE(setup_of(agent).as_object().contains("running"));
  // Meanwhile the status socket answers at once: the script does not block the loop.
  auto t0 = std::chrono::steady_clock::now();
  CHECK(agent.curl("http://localhost/v1/health").exit_code == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 1s);
  auto followed = run_command(fmt::format("{} --socket {} setup logs slow-talker --follow", instancectl_binary(),
                                          agent.socket().string()));
  CHECK(followed.exit_code == 0);
  CHECK(followed.output == "step 1\nstep 2\nstep 3\nstep 4\nstep 5\n");
  CHECK(state(setup_of(agent), "slow-talker") == "succeeded");
}
