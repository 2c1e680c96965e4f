// The SSH policy against a real sshd (Debian's openssh-server, started with a config and
// host key of the test's own on a free port), run as ssh.service by the systemctl
// stand-in: the machine's own SSH service is never touched.
#include <csignal>

#include "tests/workstation/workstation.hpp"

using namespace instanced::testing;

namespace {

// The first bytes the server at `port` sends: "SSH-2.0-OpenSSH_9.2p1 …" or nothing.
std::string banner(int port) {
  return run_command(fmt::format("timeout 3 bash -c 'exec 3<>/dev/tcp/127.0.0.1/{} && head -c 15 <&3' 2>/dev/null", port))
      .output;
}

bool wait_banner(int port, bool want) {
  for (int i = 0; i < 200; ++i) {
    if ((banner(port) == "SSH-2.0-OpenSSH") == want) return true;
    std::this_thread::sleep_for(50ms);
  }
  return false;
}

struct Sshd {
  Sshd(const TempDir& dir, const Standins& units) : port(free_port()) {
    INFO("openssh-server is not installed (scripts/install-deps installs it)");
    REQUIRE(std::filesystem::exists("/usr/sbin/sshd"));
    REQUIRE(run_command(fmt::format("ssh-keygen -q -t ed25519 -N '' -f {} && echo ok", (dir / "host_key").string())).output == "ok\n");
    dir.write("sshd_config", fmt::format("Port {}\nListenAddress 127.0.0.1\nHostKey {}\nPidFile none\nUsePAM no\nStrictModes no\n",
                                         port, (dir / "host_key").string()));
    std::filesystem::create_directories("/run/sshd");  // sshd's privilege separation folder
    units.unit("ssh.service", fmt::format("/usr/sbin/sshd -D -e -f {}", (dir / "sshd_config").string()), true);
    REQUIRE(units.systemctl("start ssh.service") == 0);
    REQUIRE(wait_banner(port, true));
  }
  int port;
};

}  // namespace

TEST_CASE("ssh policy: disabled and enabled through systemctl, drift undone, kept across restarts", "[workstation]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Standins units(dir);
  Sshd sshd(dir, units);
  AgentProcess agent(dir, workstation_config(control_config(cp, "vm-ssh") + R"(
ssh:
  policy: disabled
  unit: ssh.service
  interval: 200ms
)"));
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp http(agent.socket());
  // The config says disabled: the running, enabled sshd is disabled and stopped.
  auto v = poll(http, "/v1/ssh", [](const json::value& v) {
    auto* c = v.as_object().if_contains("compliant");
    return c && *c == true;
  });
  CHECK(v.at("unit_file_state") == "disabled");
  CHECK(v.at("active_state") == "inactive");
  CHECK(v.at("source") == "config");
  CHECK(units.count("disable --now -- ssh.service") == 1);
  CHECK(wait_banner(sshd.port, false));
  auto ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " ssh");
  CHECK_THAT(ctl.output, Catch::StartsWith("policy:  disabled (from the config)\nunit:    ssh.service: disabled, inactive\n"));

  // The control plane enables it.
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-ssh"); }));
  cp.command("vm-ssh", R"({"id": "p-1", "name": "set_ssh_policy", "args": {"policy": "sometimes"}})");
  auto bad = command_result(cp, "vm-ssh", "p-1");
  CHECK(bad.at("status") == "invalid");
  CHECK(bad.at("error") == "args.policy: 'sometimes' is not one of enabled, disabled, unmanaged");
  cp.command("vm-ssh", R"({"id": "p-2", "name": "set_ssh_policy", "args": {"policy": "enabled"}})");
  auto ok = command_result(cp, "vm-ssh", "p-2");
  INFO(json::serialize(ok));
  CHECK(ok.at("status") == "ok");
  CHECK(ok.at("result").at("active_state") == "active");
  CHECK(wait_banner(sshd.port, true));
  CHECK(event_of(cp, "vm-ssh", "ssh_policy_applied").at("data").at("policy") == "disabled");

  // Someone turns it off by hand: drift, reported and undone.
  REQUIRE(units.systemctl("disable --now ssh.service") == 0);
  v = poll(http, "/v1/ssh", [](const json::value& v) { return v.at("drifts") == 1 && v.at("active_state") == "active"; });
  CHECK(v.at("unit_file_state") == "enabled");
  // The agent's look (is-enabled, then is-active) may fall between the hand's two steps
  // (disable, then stop): the event reports what it saw, which is off the policy either way.
  auto drift = event_of(cp, "vm-ssh", "ssh_drift");
  INFO(json::serialize(drift));
  CHECK((drift.at("data").at("unit_file_state") == "disabled" || drift.at("data").at("active_state") != "active"));
  CHECK(drift.at("data").at("policy") == "enabled");
  CHECK(wait_banner(sshd.port, true));
  CHECK_THAT(http.get("/metrics").body, Catch::Contains("instanced_ssh_drift_total 1"));

  // The control plane's policy outlives the agent (the config still says disabled).
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(10s) == 0);
  const auto disables = units.count("disable --now -- ssh.service");
  REQUIRE(agent.start_and_wait_ready());
  UnixHttp again(agent.socket());
  v = poll(again, "/v1/ssh", [](const json::value& v) {
    auto* c = v.as_object().if_contains("compliant");
    return c && *c == true;
  });
  CHECK(v.at("policy") == "enabled");
  CHECK(v.at("source") == "control plane");
  CHECK(units.count("disable --now -- ssh.service") == disables);
  CHECK(banner(sshd.port) == "SSH-2.0-OpenSSH");

  // reset: back to the config's policy.
  REQUIRE(cp.wait([](const json::value& v) { return v.at("vm-ssh").at("connected") == true; }));
  cp.command("vm-ssh", R"({"id": "p-3", "name": "set_ssh_policy", "args": {"reset": true}})");
  CHECK(command_result(cp, "vm-ssh", "p-3").at("result").at("policy") == "disabled");
  INFO(units.calls() << "pid " << units.pid("ssh.service") << "\n" << run_command("pgrep -a sshd").output << agent.log());
  CHECK(wait_banner(sshd.port, false));
  units.systemctl("stop ssh.service");
}
