// The mounts subsystem built in the test process: a fake mount table and fake helpers
// (mount.cifs "mounts" by writing the table), a real listening socket for the SMB port
// check, and a simulated clock, so the drain's hold is checked probe round by probe round
// over ten simulated minutes.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <catch2/catch.hpp>

#include "agent/mounts/mounts.hpp"
#include "tests/fakes/fake_mount_ops.hpp"
#include "tests/fakes/fake_process.hpp"
#include "tests/fakes/sim_api.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::testing;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using tcp = asio::ip::tcp;

namespace {

struct Rig : SimApi {
  Rig() : port_open(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
    dir.write("key", "SmbKey/With+Base64=\n");
    std::filesystem::permissions(dir / "key", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    MountConfig m;
    m.name = "users";
    m.account = "wsacct01";
    m.share = "workspace";
    m.endpoint = "127.0.0.1:" + std::to_string(port_open.local_endpoint().port());
    m.key_file = (dir / "key").string();
    m.mount_point = (dir / "mnt/users").string();
    config.mounts = {m};
    config.probe_interval = 30s;
    config.drain_hold = 10min;
    // mount.cifs mounts (the table shows the share), smbclient's check passes.
    runner.on_spawn = [this](FakeChild& c) {
      if (c.spec.argv[0].ends_with("mount.cifs")) ops.add_mount((dir / "mnt/users").string(), "cifs", "//127.0.0.1/workspace");
      c.exit(0);
    };
    mounts = std::make_unique<mounts::Mounts>(ioc.get_executor(), api, runner, ops, config, ProxyConfig{}, (dir / "state").string(),
                                              monitor::Launcher{});  // SMB only: no driver to monitor
    start(mounts->run());
  }
  ~Rig() { stop_and_wait(); }
  std::string state() const {
    return std::string(mounts->status_json().at("mounts").at(0).at("state").as_string());
  }
  std::size_t mount_cifs_runs() const {
    std::size_t n = 0;
    for (const auto& c : runner.children) n += c->spec.argv[0].ends_with("mount.cifs");
    return n;
  }
  asio::awaitable<void> drain(std::optional<Result<std::string>>& out) { out = co_await mounts->drain("prepare_stop"); }
  // Moves the clock by `d` and runs the probe round that falls due.
  bool round_after(Clock::steady_time::duration d) {
    const auto before = clock.sleeps();
    clock.advance(d);
    return run_until([&] { return clock.sleeps() > before; });
  }

  TempDir dir;
  tcp::acceptor port_open;  // listening is enough for the port check's connect
  FakeProcessRunner runner{ioc.get_executor()};
  FakeMountOps ops;
  StorageConfig config;
  std::unique_ptr<mounts::Mounts> mounts;
};

}  // namespace

TEST_CASE("mounts, simulated: after a drain the share is not mounted again for drain_hold, then it is",
          "[mounts][simulated]") {
  Rig rig;
  REQUIRE(rig.run_until([&] { return rig.state() == "mounted" && rig.clock.sleepers() > 0; }));
  CHECK(rig.mount_cifs_runs() == 1);
  CHECK(rig.mounts->ready_gate().is_open());

  std::optional<Result<std::string>> drained;
  asio::co_spawn(rig.ioc, rig.drain(drained), asio::detached);
  REQUIRE(rig.run_until([&] { return drained.has_value(); }));
  REQUIRE(*drained);
  CHECK(**drained == "users: flushed and unmounted");
  CHECK(rig.state() == "drained");
  CHECK_FALSE(rig.ops.is_mounted((rig.dir / "mnt/users").string()));
  const auto calls = rig.ops.calls();
  REQUIRE(calls.size() == 2);
  CHECK(calls[0].starts_with("sync "));
  CHECK(calls[1].starts_with("umount "));

  // Every probe round of the hold (19 rounds of 30 s): still drained, mount.cifs not run.
  for (int i = 0; i < 19; ++i) {
    REQUIRE(rig.round_after(30s));
    REQUIRE(rig.state() == "drained");
    REQUIRE(rig.mount_cifs_runs() == 1);
  }
  // The hold ends at 10 min: mounted again.
  REQUIRE(rig.round_after(30s));
  REQUIRE(rig.run_until([&] { return rig.state() == "mounted"; }));
  CHECK(rig.mount_cifs_runs() == 2);
}

TEST_CASE("mounts, simulated: an operator's remount ends the drain's hold at once", "[mounts][simulated]") {
  Rig rig;
  REQUIRE(rig.run_until([&] { return rig.state() == "mounted" && rig.clock.sleepers() > 0; }));
  std::optional<Result<std::string>> drained;
  asio::co_spawn(rig.ioc, rig.drain(drained), asio::detached);
  REQUIRE(rig.run_until([&] { return drained.has_value(); }));
  REQUIRE(rig.state() == "drained");
  REQUIRE(rig.mounts->remount("users"));  // no time passes
  REQUIRE(rig.run_until([&] { return rig.state() == "mounted"; }));
  CHECK(rig.mount_cifs_runs() == 2);
}
