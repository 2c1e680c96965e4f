// The workstation services in the real agent: an application (a Jupyter stand-in serving
// Jupyter's documented REST JSON and WebSocket handshake, started as a "unit" by the
// systemctl stand-in) that slows down, fails, dies and is restarted through systemctl;
// idle detection with real logins (a utmp file), a Jupyter kernel and a job, and the
// control plane's idle_shutdown refused and then accepted; the schedule, its warning
// (wall) and set_schedule kept across a restart.
#include <csignal>
#include <ctime>
#include <sys/types.h>
#include <unistd.h>
#include <utmpx.h>

#include "common/cron.hpp"
#include "tests/workstation/workstation.hpp"

using namespace instanced::testing;

namespace {

std::string iso_ago(std::chrono::seconds ago) {
  std::time_t t = std::time(nullptr) - ago.count();
  char buf[40];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S.000000Z", std::gmtime(&t));
  return buf;
}

std::string kernel(const std::string& state, std::chrono::seconds ago) {
  return fmt::format(R"({{"id": "k1", "name": "python3", "last_activity": "{}", "execution_state": "{}", "connections": 1}})",
                     iso_ago(ago), state);
}

// A Jupyter stand-in run as jupyter.service by the systemctl stand-in.
struct Jupyter {
  Jupyter(const TempDir& dir, const Standins& units) : dir_(dir), units_(units), port(free_port()) {
    dir.write("jupyter-token", "tok-123\n");
    std::filesystem::permissions(dir / "jupyter-token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                                 std::filesystem::perm_options::replace);
    answer(R"({"kernels": [)" + kernel("idle", std::chrono::seconds(600)) + "]}");
    units.unit("jupyter.service",
               fmt::format("/usr/bin/python3 {}/jupyter-stub.py {} {} tok-123", WORKSTATION_TEST_DIR, port,
                           (dir / "jupyter.json").string()),
               true);
    REQUIRE(units.systemctl("start jupyter.service") == 0);
    wait_listening();
  }
  void answer(const std::string& json) const { dir_.write("jupyter.json", json); }
  void wait_listening() const {
    for (int i = 0; i < 200; ++i) {
      if (run_command(fmt::format("curl -s -o /dev/null -H 'Authorization: token tok-123' http://127.0.0.1:{}/api/status && echo up", port))
              .output == "up\n")
        return;
      std::this_thread::sleep_for(25ms);
    }
    FAIL("the Jupyter stand-in did not start");
  }
  std::string app_config(int max_restarts = 2) const {
    return fmt::format(R"(applications:
  interval: 200ms
  timeout: 1s
  slow: 400ms
  down_after: 2
  max_restarts: {}
  restart_window: 1h
  apps:
    - name: jupyter
      unit: jupyter.service
      url: http://127.0.0.1:{}/api/status
      websocket: ws://127.0.0.1:{}/api/kernels/k1/channels
      jupyter: true
      token_file: {{dir}}/jupyter-token
      restart: true
)",
                       max_restarts, port, port);
  }
  const TempDir& dir_;
  const Standins& units_;
  int port;
};

json::value app(UnixHttp& http, const std::string& state) {
  return poll(http, "/v1/apps", [&](const json::value& v) {
    return v.at("apps").as_array()[0].at("state") == json::value(state);
  }).at("apps").as_array()[0];
}

void write_utmp(const std::filesystem::path& file, bool with_session) {
  std::ofstream out(file, std::ios::binary | std::ios::trunc);
  if (!with_session) return;
  utmpx u{};
  u.ut_type = USER_PROCESS;
  u.ut_pid = getpid();  // alive for the test's length
  std::strncpy(u.ut_line, "pts/0", sizeof u.ut_line);
  std::strncpy(u.ut_user, "alice", sizeof u.ut_user);
  std::strncpy(u.ut_host, "10.1.2.3", sizeof u.ut_host);
  out.write(reinterpret_cast<const char*>(&u), sizeof u);
  // A record of a login whose process is gone (the session ended without logout).
  u.ut_pid = 999999;
  std::strncpy(u.ut_user, "bob", sizeof u.ut_user);
  out.write(reinterpret_cast<const char*>(&u), sizeof u);
}

}  // namespace

TEST_CASE("apps: up, degraded when slow or failing, down when dead, restarted through systemctl, then rate-limited", "[workstation]") {
  TempDir dir;
  Standins units(dir);
  Jupyter jupyter(dir, units);
  AgentProcess agent(dir, workstation_config(jupyter.app_config(2)));
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp http(agent.socket());
  auto a = app(http, "up");
  CHECK(a.at("jupyter").at("kernels") == 1);
  auto ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " apps; echo rc=$?");
  CHECK_THAT(ctl.output, Catch::Contains("NAME          STATE      PROBE     RESTARTS  ACTIVITY"));
  CHECK_THAT(ctl.output, Catch::Contains("1 kernels (0 busy), 0 terminals, last "));
  CHECK_THAT(ctl.output, Catch::EndsWith("rc=0\n"));
  CHECK(a.at("jupyter").at("connections") == 1);
  CHECK(a.at("restarts") == 0);

  jupyter.answer(R"({"delay": 0.6, "kernels": []})");
  a = app(http, "degraded");
  CHECK_THAT(std::string(a.at("reason").as_string()), Catch::StartsWith("slow: answered in"));
  jupyter.answer(R"({"status": 500})");
  poll(http, "/v1/apps", [](const json::value& v) {
    return v.at("apps").as_array()[0].at("reason") == "answered 500 (a server error)";
  });
  CHECK(app(http, "degraded").at("state") == "degraded");
  jupyter.answer(R"({"kernels": []})");
  app(http, "up");

  // The application dies: down after two failed probes, restarted through the unit.
  pid_t first = units.pid("jupyter.service");
  REQUIRE(first > 0);
  kill(first, SIGKILL);
  poll(http, "/v1/apps", [](const json::value& v) { return v.at("apps").as_array()[0].at("restarts") == 1; });
  // (The count goes up as the restart is asked for; the stand-in records it a moment later.)
  CHECK(units.wait_count("restart -- jupyter.service", 1) == 1);
  a = app(http, "up");
  CHECK(units.pid("jupyter.service") != first);
  auto status = json::parse(http.get("/v1/status").body);
  bool down_seen = false, restarted_seen = false;
  for (const auto& e : status.at("events").as_array()) {
    if (e.at("type") == "app_state" && e.at("data").at("state") == "down") {
      down_seen = true;
      CHECK_THAT(std::string(e.at("data").at("reason").as_string()), Catch::Contains("Connection refused"));
    }
    restarted_seen = restarted_seen || e.at("type") == "app_restarted";
  }
  CHECK(down_seen);
  CHECK(restarted_seen);
  CHECK_THAT(http.get("/metrics").body, Catch::Contains(R"(instanced_app_restarts_total{app="jupyter",result="ok"} 1)"));

  // Twice more: the second restart is the last within the window; then it stays down.
  kill(units.pid("jupyter.service"), SIGKILL);
  poll(http, "/v1/apps", [](const json::value& v) { return v.at("apps").as_array()[0].at("restarts") == 2; });
  app(http, "up");
  kill(units.pid("jupyter.service"), SIGKILL);
  poll(http, "/v1/status", [](const json::value& v) {
    for (const auto& e : v.at("events").as_array())
      if (e.at("type") == "app_restart_limited") return true;
    return false;
  });
  // The limit was the decision not to restart: no third restart came with it.
  CHECK(units.count("restart -- jupyter.service") == 2);
  a = app(http, "down");
  CHECK(a.at("restarts") == 2);
  ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " apps; echo rc=$?");
  CHECK_THAT(ctl.output, Catch::Contains("    GET /api/status: Connection refused"));
  CHECK_THAT(ctl.output, Catch::EndsWith("rc=1\n"));
  auto health = json::parse(http.get("/v1/status").body);
  CHECK(health.at("subsystems").at("apps").at("state") == "degraded");
}

TEST_CASE("idle: logins, Jupyter kernels and jobs keep the instance busy, and idle_shutdown is refused with the reasons until it is idle", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  Jupyter jupyter(dir, units);
  write_utmp(dir / "utmp", true);
  AgentProcess agent(dir, workstation_config(jupyter.app_config() + control_config(cp, "vm-idle") + R"(
idle:
  interval: 200ms
  after: 2s
  utmp: {dir}/utmp
  cpu_percent: 100
)"));
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp http(agent.socket());
  auto v = poll(http, "/v1/idle", [](const json::value& v) { return !v.at("activity").as_array().empty(); });
  // bob's record has no process any more: not a session.
  CHECK(v.at("activity") == json::array{"session: alice pts/0 from 10.1.2.3"});
  CHECK(v.at("idle") == false);
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-idle"); }));
  cp.command("vm-idle", R"({"id": "i-1", "name": "idle_shutdown"})");
  auto r = command_result(cp, "vm-idle", "i-1");
  CHECK(r.at("status") == "refused");
  CHECK(r.at("error") == "idle: not idle: session: alice pts/0 from 10.1.2.3");

  // The login ends; a kernel is executing.
  write_utmp(dir / "utmp", false);
  jupyter.answer(R"({"kernels": [)" + kernel("busy", std::chrono::seconds(0)) + "]}");
  v = poll(http, "/v1/idle", [](const json::value& v) {
    return v.at("activity") == json::array{"Jupyter: 1 kernels busy"};
  });
  cp.command("vm-idle", R"({"id": "i-2", "name": "idle_shutdown"})");
  r = command_result(cp, "vm-idle", "i-2");
  CHECK(r.at("status") == "refused");
  CHECK(r.at("error") == "idle: not idle: Jupyter: 1 kernels busy");
  // The kernel finishes: quiet since its last activity, idle two seconds later.
  jupyter.answer(R"({"kernels": [)" + kernel("idle", std::chrono::seconds(0)) + "]}");
  v = poll(http, "/v1/idle", [](const json::value& v) { return v.at("activity").as_array().empty(); });
  v = poll(http, "/v1/idle", [](const json::value& v) { return v.at("idle") == true; });
  const std::string since(v.at("idle_since").as_string());
  // The heartbeat carries idle_since; the control plane got an "idle" event.
  CHECK(cp.wait([&](const json::value& c) {
    auto* hb = c.at("vm-idle").as_object().if_contains("heartbeat");
    auto* idle = hb ? hb->as_object().if_contains("idle") : nullptr;
    return idle && idle->at("since") == json::value(since) && idle->at("idle") == true;
  }));
  CHECK(event_of(cp, "vm-idle", "idle").at("data").at("idle_since") == json::value(since));

  // A job is activity too.
  REQUIRE(http.post("/v1/jobs", R"({"id": "j1", "command": ["sleep", "1"]})").status == 202);
  v = poll(http, "/v1/idle", [](const json::value& v) { return v.at("idle") == false; });
  poll(http, "/v1/idle", [](const json::value& v) { return v.at("idle") == true; });

  cp.command("vm-idle", R"({"id": "i-3", "name": "idle_shutdown"})");
  r = command_result(cp, "vm-idle", "i-3");
  INFO(json::serialize(r));
  CHECK(r.at("status") == "ok");
  CHECK(r.at("result").at("action") == "idle_shutdown");
  CHECK(r.at("result").at("drained").as_object().contains("jobs"));
}

TEST_CASE("idle_shutdown is refused by the disk guardian while the 5 GB rule is violated", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  std::string cfg = workstation_config(control_config(cp, "vm-full") + R"(
idle:
  interval: 200ms
  after: 0s
  utmp: {dir}/utmp
  cpu_percent: 100
)");
  // `/` stands in for the OS disk: under 99 % free is "recovery required" here.
  cfg.replace(cfg.find("disk:\n  paths: []"), std::string("disk:\n  paths: []").size(),
              "disk:\n  interval: 200ms\n  paths:\n    - path: {dir}\n      recovery: 99%");
  AgentProcess agent(dir, cfg);
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp http(agent.socket());
  poll(http, "/v1/idle", [](const json::value& v) { return v.at("idle") == true; });
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-full"); }));
  cp.command("vm-full", R"({"id": "f-1", "name": "idle_shutdown"})");
  auto r = command_result(cp, "vm-full", "f-1");
  INFO(json::serialize(r));
  CHECK(r.at("status") == "refused");
  CHECK_THAT(std::string(r.at("error").as_string()), Catch::StartsWith("disk: idle_shutdown refused:"));
}

TEST_CASE("schedule: the next stop in its time zone, a warning to logged-in users, set_schedule kept across a restart", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  AgentProcess agent(dir, workstation_config(control_config(cp, "vm-sched") + R"(
idle:
  interval: 200ms
  utmp: {dir}/utmp
schedule:
  time_zone: Europe/Berlin
  stop: ["0 19 * * 1-5"]
  warn_before: 2m
  wall: [{dir}/wall]
)"));
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp http(agent.socket());
  auto zone = instanced::cron::TimeZone::locate("Europe/Berlin");
  REQUIRE(zone);
  auto v = poll(http, "/v1/idle", [](const json::value& v) { return v.at("schedule").as_object().contains("next_stop"); });
  auto expect = instanced::cron::next_after(*instanced::cron::parse("0 19 * * 1-5"), *zone, std::chrono::system_clock::now());
  REQUIRE(expect);
  CHECK(v.at("schedule").at("next_stop_local") == json::value(zone->format(*expect)));
  CHECK(v.at("schedule").at("source") == "config");
  auto ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " status");
  CHECK_THAT(ctl.output, Catch::Contains("next scheduled stop " + zone->format(*expect)));
  ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " idle");
  CHECK_THAT(ctl.output, Catch::Contains("schedule (config, Europe/Berlin):\n  stop  0 19 * * 1-5\nnext stop:  " +
                                         zone->format(*expect) + "\n"));

  // The control plane sets a stop 30 to 90 s ahead: users are warned at once.
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-sched"); }));
  cp.command("vm-sched", R"({"id": "s-1", "name": "set_schedule", "args": {"stop": ["0 25 * * *"]}})");
  auto bad = command_result(cp, "vm-sched", "s-1");
  CHECK(bad.at("status") == "invalid");
  CHECK(bad.at("error") == "args.stop[0]: field 2 (hour): '25' is out of range 0-23");
  std::time_t t = std::time(nullptr) + 90;  // 30 to 90 s ahead: within warn_before
  std::tm utc{};
  gmtime_r(&t, &utc);
  std::string expr = fmt::format("{} {} * * *", utc.tm_min, utc.tm_hour);
  cp.command("vm-sched", fmt::format(R"({{"id": "s-2", "name": "set_schedule", "args": {{"time_zone": "UTC", "stop": ["{}"]}}}})", expr));
  auto ok = command_result(cp, "vm-sched", "s-2");
  INFO(json::serialize(ok));
  CHECK(ok.at("status") == "ok");
  CHECK(ok.at("result").at("schedule").at("source") == "control plane");
  auto warning = event_of(cp, "vm-sched", "stop_warning");
  CHECK(warning.at("data").at("kind") == "schedule");
  CHECK(eventually([&] { return !units.wall_log().empty(); }, 10s));
  CHECK_THAT(units.wall_log(), Catch::StartsWith("instanced: This instance will be stopped by its schedule at "));
  CHECK_THAT(units.wall_log(), Catch::Contains(" UTC (in "));

  // Kept across a restart, and shown as the control plane's.
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(10s) == 0);
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp again(agent.socket());
  v = poll(again, "/v1/idle", [](const json::value& v) { return v.at("schedule").at("source") == "control plane"; });
  CHECK(v.at("schedule").at("stop") == json::array{json::string(expr)});
  CHECK(v.at("schedule").at("time_zone") == "UTC");
}
