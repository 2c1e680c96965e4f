// The SSH policy built in the test process on a fake service manager, under a simulated
// clock: drift is undone at the next look and not before, and an unmanaged unit is never
// asked about, however long the agent runs.
#include <catch2/catch.hpp>

#include "agent/ssh/ssh.hpp"
#include "tests/fakes/fake_services.hpp"
#include "tests/fakes/sim_api.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::testing;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

struct Rig : SimApi {
  explicit Rig(SshPolicy policy) {
    config.policy = policy;
    config.interval = 60s;
    services.units["ssh.service"] = {"enabled", "active"};
    ssh = std::make_unique<ssh::Ssh>(ioc.get_executor(), api, services, config, dir.path().string());
    start(ssh->run());
  }
  ~Rig() { stop_and_wait(); }
  // The loop sleeps on the clock between looks: it is idle once it does.
  bool idle() { return run_until([this] { return clock.sleepers() > 0; }); }
  // Runs everything that is ready (the fake answers at once: nothing waits on a thread).
  void settle() {
    ioc.restart();
    while (ioc.poll() > 0) {
    }
  }
  std::size_t events(const std::string& type) const {
    std::size_t n = 0;
    for (const auto& e : state.events())
      n += e.type == type;
    return n;
  }

  TempDir dir;
  FakeServiceManager services;
  SshConfig config;
  std::unique_ptr<ssh::Ssh> ssh;
};

}  // namespace

TEST_CASE("ssh policy, simulated: drift is undone at the next look, not before", "[ssh][simulated]") {
  Rig rig(SshPolicy::disabled);
  REQUIRE(rig.idle());
  CHECK(rig.services.count("disable --now ssh.service") == 1);  // applied at start
  CHECK(rig.services.units["ssh.service"].file_state == "disabled");
  CHECK(rig.events("ssh_policy_applied") == 1);

  // Someone enables it by hand. 59 s of looks-to-be: nothing is asked or changed.
  rig.services.units["ssh.service"] = {"enabled", "active"};
  const auto calls = rig.services.calls.size();
  rig.clock.advance(59s);
  REQUIRE(rig.idle());
  CHECK(rig.services.calls.size() == calls);
  CHECK(rig.events("ssh_drift") == 0);
  // At 60 s the look finds the drift, reports it once and disables the unit again.
  rig.clock.advance(1s);
  REQUIRE(rig.run_until([&] { return rig.services.count("disable --now") == 2 && rig.clock.sleepers() > 0; }));
  CHECK(rig.events("ssh_drift") == 1);
  CHECK(rig.services.units["ssh.service"].file_state == "disabled");
  CHECK(rig.ssh->status_json().at("compliant") == true);
  // A compliant unit is only looked at: two questions per interval, no change.
  rig.clock.advance(60s);
  REQUIRE(rig.run_until([&] { return rig.services.count("is-enabled") == 5 && rig.clock.sleepers() > 0; }));
  CHECK(rig.services.count("disable --now") == 2);
  CHECK(rig.events("ssh_drift") == 1);
}

TEST_CASE("ssh policy, simulated: unmanaged is never asked about, and a reload to enabled applies at once",
          "[ssh][simulated]") {
  Rig rig(SshPolicy::unmanaged);
  rig.settle();
  CHECK(rig.clock.sleepers() == 0);  // waiting for a reload or a command, not for time
  for (int i = 0; i < 24; ++i) {
    rig.clock.advance(1h);
    rig.settle();
  }
  CHECK(rig.services.calls.empty());
  rig.services.units["ssh.service"] = {"disabled", "inactive"};
  rig.config.policy = SshPolicy::enabled;
  rig.ssh->reconfigure(rig.config);  // the reload's pulse: no waiting for an interval
  REQUIRE(rig.run_until([&] { return rig.services.count("enable --now ssh.service") == 1; }));
  CHECK(rig.services.units["ssh.service"].active == "active");
}
