// Shutdowns from inside the VM: through logind (a fake logind on a private dbus-daemon,
// speaking org.freedesktop.login1's Inhibit and PrepareForShutdown) the shutdown is held
// until os_shutdown reached the control plane; without logind, a SIGTERM while systemd
// (the systemctl stand-in) says "stopping" is reported, a plain service stop is not.
#include <csignal>

#include "tests/workstation/workstation.hpp"

using namespace instanced::testing;

namespace {

bool has_event(const DevCp& cp, const std::string& instance, const std::string& type) {
  auto v = cp.instances();
  auto* i = v.as_object().if_contains(instance);
  auto* events = i ? i->as_object().if_contains("recent_events") : nullptr;
  if (!events) return false;
  for (const auto& e : events->as_array())
    if (e.at("type") == json::value(type)) return true;
  return false;
}

bool wait_line(const std::filesystem::path& log, const std::string& what, int count = 1) {
  return eventually(
      [&] {
        std::istringstream in(slurp(log));
        int n = 0;
        for (std::string line; std::getline(in, line);) n += line.find(what) != std::string::npos;
        return n >= count;
      },
      15s);
}

}  // namespace

TEST_CASE("os shutdown: SIGTERM while systemd is stopping is reported before the agent exits, a service stop is not", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  AgentProcess agent(dir, workstation_config(control_config(cp, "vm-off") + "power:\n  logind: false\n  report_wait: 3s\n"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-off") && v.at("vm-off").at("connected") == true; }));
  // `systemctl stop instanced`: the system keeps running.
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(10s) == 0);
  CHECK(units.count("is-system-running") == 1);
  CHECK_FALSE(has_event(cp, "vm-off", "os_shutdown"));

  // `sudo poweroff`: systemd is stopping everything.
  dir.write("system-state", "stopping\n");
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return v.at("vm-off").at("connected") == true; }));
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(10s) == 0);
  // Delivered before the agent exited: nothing is left to send.
  CHECK(has_event(cp, "vm-off", "os_shutdown"));
  auto e = event_of(cp, "vm-off", "os_shutdown");
  CHECK(e.at("data").at("source") == "sigterm");
  CHECK_THAT(agent.log(), Catch::Contains("os_shutdown delivered to the control plane"));
}

TEST_CASE("os shutdown: logind's PrepareForShutdown is held by the delay lock until os_shutdown is delivered", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  dir.write("bus.conf", fmt::format(R"(<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
)",
                                    (dir / "bus.sock").string()));
  pid_t bus = spawn({"/usr/bin/dbus-daemon", "--nofork", "--config-file=" + (dir / "bus.conf").string()},
                    (dir / "dbus.log").string());
  CHECK(eventually([&] { return std::filesystem::exists(dir / "bus.sock"); }, 10s));
  const std::string address = "unix:path=" + (dir / "bus.sock").string();
  pid_t logind = spawn({"/usr/bin/python3", std::string(WORKSTATION_TEST_DIR) + "/fake-logind.py", address,
                        (dir / "logind.log").string()},
                       (dir / "fake-logind.err").string());
  struct Reap {
    pid_t a, b;
    ~Reap() {
      kill(a, SIGTERM);
      kill(b, SIGTERM);
      waitpid(a, nullptr, 0);
      waitpid(b, nullptr, 0);
    }
  } reap{logind, bus};
  INFO(slurp(dir / "fake-logind.err") << slurp(dir / "dbus.log"));
  REQUIRE(wait_line(dir / "logind.log", "ready"));

  AgentProcess agent(dir, workstation_config(control_config(cp, "vm-logind") + "power:\n  logind: true\n  report_wait: 3s\n"));
  REQUIRE(agent.start_and_wait_ready(10s, {{"DBUS_SYSTEM_BUS_ADDRESS", address}}));
  UnixHttp http(agent.socket());
  REQUIRE(wait_line(dir / "logind.log", "inhibit shutdown instanced delay"));
  auto v = poll(http, "/v1/status", [](const json::value& v) {
    // Absent until the power subsystem has published its first details.
    boost::system::error_code absent;
    const auto* lock = v.find_pointer("/subsystems/power/details/logind_lock", absent);
    return lock && *lock == true;
  });
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-logind") && v.at("vm-logind").at("connected") == true; }));

  // `sudo shutdown`: logind announces it and waits for the lock.
  kill(logind, SIGUSR1);
  INFO(slurp(dir / "logind.log") << agent.log());
  REQUIRE(wait_line(dir / "logind.log", "released"));
  // The lock went only after the control plane had the event.
  CHECK(has_event(cp, "vm-logind", "os_shutdown"));
  CHECK(event_of(cp, "vm-logind", "os_shutdown").at("data").at("source") == "logind");

  // The shutdown is cancelled: the agent takes the lock again.
  kill(logind, SIGUSR2);
  CHECK(wait_line(dir / "logind.log", "inhibit shutdown instanced delay", 2));
  // The event goes out after the lock is taken again: waited for, not assumed there.
  CHECK(cp.wait([&](const json::value&) { return has_event(cp, "vm-logind", "os_shutdown_cancelled"); }));
  agent.signal(SIGTERM);
  CHECK(agent.wait_exit(10s) == 0);
}
