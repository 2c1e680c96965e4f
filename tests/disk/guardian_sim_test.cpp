// The disk guardian built in the test process, under a simulated clock and an in-memory
// file system whose free space the test sets: the hysteresis is checked look by look, hours
// of simulated time in a fraction of a second, with no sleep.
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "agent/disk/guardian.hpp"
#include "tests/fakes/fake_process.hpp"
#include "tests/fakes/sim_api.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::testing;
using namespace std::chrono_literals;
namespace asio = boost::asio;

namespace {

constexpr std::uint64_t MiB = 1 << 20;

FsUsage with_free(std::uint64_t avail) { return FsUsage{64 * MiB, avail, avail, 10000, 5000, 5000}; }

// One guardian watching /data (low below 32 MiB, the rule below 16 MiB, margin 4 MiB, hold
// 30 s, a look every 10 s) on the test's io_context.
struct Rig : SimApi {
  Rig() {
    config.interval = 10s;
    config.hold = 30s;
    config.margin = ByteSize{4 * MiB};
    std::filesystem::create_directories(dir / "scan");
    config.scan_root = (dir / "scan").string();
    config.reboot_command = {"/bin/true"};
    config.paths = {WatchedPath{"/data", {32 * MiB, -1}, {16 * MiB, -1}, {0, 10}, {0, 2}}};
    fs.set_usage("/data", with_free(48 * MiB));
    guardian = std::make_unique<disk::Guardian>(ioc.get_executor(), api, runner, config, (dir / "state").string());
    start(guardian->run());
  }
  ~Rig() { stop_and_wait(); }

  // Moves the clock by `d` and runs the look that falls due: done once the guardian has
  // asked for the figures and sleeps again.
  bool look_after(Clock::steady_time::duration d) {
    const auto before = fs.usage_calls();
    clock.advance(d);
    return run_until([&] { return fs.usage_calls() > before && clock.sleepers() > 0; });
  }
  std::string level() const { return std::string(guardian->status_json().at("paths").at(0).at("state").as_string()); }

  TempDir dir;
  FakeProcessRunner runner{ioc.get_executor()};
  DiskConfig config;
  std::unique_ptr<disk::Guardian> guardian;
};

}  // namespace

TEST_CASE("guardian, simulated: the rule is left only above rule + margin, after the hold, look by look",
          "[disk][guardian][simulated]") {
  Rig rig;
  REQUIRE(rig.run_until([&] { return rig.fs.usage_calls() > 0 && rig.clock.sleepers() > 0; }));
  CHECK(rig.level() == "ok");
  CHECK(rig.guardian->work_gate().is_open());

  rig.fs.set_usage("/data", with_free(12 * MiB));  // below the rule (16): at the next look
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "recovery_required");
  CHECK_FALSE(rig.guardian->work_gate().is_open());
  REQUIRE(rig.guardian->veto("stop"));
  CHECK_THAT(*rig.guardian->veto("stop"), Catch::Contains(std::to_string(20 * MiB - 12 * MiB)));

  // Just above the rule but inside the margin (18 < 16 + 4): an hour of looks changes nothing.
  rig.fs.set_usage("/data", with_free(18 * MiB));
  for (int i = 0; i < 360; ++i) {
    REQUIRE(rig.look_after(10s));
    REQUIRE(rig.level() == "recovery_required");
  }

  // Above rule + margin from this look on: still held at every look before 30 s ...
  rig.fs.set_usage("/data", with_free(28 * MiB));
  REQUIRE(rig.look_after(10s));  // the good stretch begins
  CHECK(rig.level() == "recovery_required");
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "recovery_required");
  // ... and a dip back into the margin starts the stretch again.
  rig.fs.set_usage("/data", with_free(19 * MiB));
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "recovery_required");
  rig.fs.set_usage("/data", with_free(28 * MiB));
  REQUIRE(rig.look_after(10s));  // the stretch begins again here
  REQUIRE(rig.look_after(10s));
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "recovery_required");  // 20 s into it
  REQUIRE(rig.look_after(10s));               // 30 s: the hold has passed
  CHECK(rig.level() == "low");
  CHECK(rig.guardian->work_gate().is_open());
  CHECK_FALSE(rig.guardian->veto("stop"));
}

TEST_CASE("guardian, simulated: a path that disappears is absent, and watched again when it returns",
          "[disk][guardian][simulated]") {
  Rig rig;
  REQUIRE(rig.run_until([&] { return rig.fs.usage_calls() > 0 && rig.clock.sleepers() > 0; }));
  CHECK(rig.level() == "ok");
  rig.fs.remove_usage("/data");
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "absent");
  CHECK(rig.guardian->work_gate().is_open());
  rig.fs.set_usage("/data", with_free(12 * MiB));
  REQUIRE(rig.look_after(10s));
  CHECK(rig.level() == "recovery_required");
}
