// A long control-plane outage under a simulated clock: the agent's ControlChannel in this
// process, the real development control plane as a separate process, and time for the
// channel's backoff and reconnect waits moved forward by the test. A ten-minute outage
// takes a few seconds of real time.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

#include "agent/control/channel.hpp"
#include "agent/control/commands.hpp"
#include "agent/status/views.hpp"
#include "tests/fakes/fake_clock.hpp"
#include "tests/fakes/fake_notifier.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"

using namespace instanced;
using namespace instanced::testing;
namespace asio = boost::asio;

namespace {

std::string control_state(const StateRegistry& state) {
  auto it = state.subsystems().find("control");
  if (it == state.subsystems().end() || !it->second.details.contains("state")) return "";
  return std::string(it->second.details.at("state").as_string());
}

}  // namespace

TEST_CASE("a ten-minute outage under a simulated clock: buffered events arrive after it, in order, once",
          "[control][channel][outage][simulated]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  const int port = cp.agent_port;

  asio::io_context ioc(1);
  FakeClock clock;
  RealFilesystem fs;
  FakeNotifier notifier;
  BlockingPool pool(1);
  Logging logging(LogTarget::stderr_lines, LogLevel::error);
  StateRegistry state(clock);
  Api api{clock, fs, notifier, pool, state, logging};
  ControlConfig config;
  const std::string state_dir = (dir / "state").string();
  config.endpoint = "ws://127.0.0.1:" + std::to_string(port) + "/v1/agent";
  config.insecure = true;
  config.token_file = (dir / "token").string();
  config.initial_delay_max = std::chrono::seconds(0);
  config.heartbeat_interval = std::chrono::hours(1);  // only events on the wire
  config.backoff_initial = std::chrono::seconds(1);
  config.backoff_max = std::chrono::minutes(5);
  config.reconnect_spread = std::chrono::seconds(10);
  control::CommandRegistry commands(clock, fs, dir / "state" / "commands.json");
  status::AgentInfo info;
  info.version = INSTANCED_VERSION;
  info.instance = "outage-test";
  info.phase = "running";
  info.config_hash = std::string(64, 'c');
  control::ControlChannel channel(ioc.get_executor(), api, config, ProxyConfig{}, state_dir, commands, info);
  auto run = channel.run();
  asio::co_spawn(ioc, std::move(run), asio::detached);

  // Runs the loop until `pred` holds, moving simulated time forward by `step` whenever the
  // loop has nothing to do (the channel is waiting on the clock).
  // With no step it waits on real work only (the development control plane's answers): up
  // to 60 s of real time, for a loaded machine or a sanitizer's build.
  auto until = [&](auto pred, Clock::steady_time::duration step, int rounds = 400) {
    const auto real_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    for (int i = 0; step == Clock::steady_time::duration::zero() ? std::chrono::steady_clock::now() < real_deadline
                                                                  : i < rounds;
         ++i) {
      ioc.run_for(std::chrono::milliseconds(20));
      if (pred()) return true;
      clock.advance(step);
    }
    return false;
  };

  REQUIRE(until([&] { return control_state(state) == "connected"; }, std::chrono::milliseconds(0)));
  state.emit("test", "before", "event 0");
  // Counted by the test's own events: the channel's own (state_changed, reconnected) go too.
  auto test_events = [&] {
    auto v = cp.instances();
    std::vector<std::string> got;
    if (!v.as_object().contains("outage-test")) return got;
    for (const auto& e : v.at("outage-test").at("recent_events").as_array())
      if (e.at("subsystem") == "test") got.emplace_back(e.at("message").as_string());
    return got;
  };
  bool first_arrived = until([&] { return !test_events().empty(); }, std::chrono::milliseconds(0));
  INFO(json::serialize(cp.instances()) << "\n" << control_state(state));
  REQUIRE(first_arrived);

  // The control plane goes away.
  cp.stop();
  REQUIRE(until([&] { return control_state(state) != "connected"; }, std::chrono::milliseconds(0)));
  // Ten simulated minutes of failed reconnects, with events and results of the agent's own
  // commands buffered meanwhile.
  const auto outage_start = clock.now();
  int emitted = 0;
  REQUIRE(until(
      [&] {
        if (emitted < 5) state.emit("test", "during", "event " + std::to_string(++emitted));
        return clock.now() - outage_start >= std::chrono::minutes(10);
      },
      std::chrono::seconds(5), 2000));
  CHECK(control_state(state) != "connected");

  // Back, on the same port: the channel reconnects at its next attempt (at most the
  // backoff ceiling away) and replays what it buffered.
  cp.start("127.0.0.1:" + std::to_string(port));
  REQUIRE(until([&] { return control_state(state) == "connected"; }, std::chrono::seconds(5), 200));
  REQUIRE(until([&] { return test_events().size() >= 5; }, std::chrono::milliseconds(0)));
  auto after = cp.instances().at("outage-test");
  // The new control plane process saw exactly the five buffered events, in order, once.
  CHECK(test_events() == std::vector<std::string>{"event 1", "event 2", "event 3", "event 4", "event 5"});
  CHECK(after.at("duplicates") == 0);
  // The channel told how long it was cut off, on its own clock.
  bool told = false;
  for (const auto& e : after.at("recent_events").as_array())
    if (e.at("subsystem") == "control" && e.at("type") == "reconnected") {
      told = true;
      CHECK(e.at("data").at("down_seconds").to_number<double>() >= 600);
    }
  CHECK(told);
  // Simulated time really passed: the outage lasted over ten minutes of the channel's clock.
  CHECK(clock.now() - outage_start >= std::chrono::minutes(10));
}

TEST_CASE("the heartbeat frame written directly is the envelope of heartbeat_body()", "[control][channel]") {
  asio::io_context ioc;
  FakeClock clock;
  RealFilesystem fs;
  FakeNotifier notifier;
  BlockingPool pool(1);
  Logging logging(LogTarget::stderr_lines, LogLevel::error);
  StateRegistry state(clock);
  state.publish("disk", Health::degraded, "/ is low");
  state.publish("we\"ird\\name", Health::ok, "escaping");
  state.set_heartbeat_summary("gpu", R"({"count":8,"healthy":7,"unhealthy":[3]})");
  Api api{clock, fs, notifier, pool, state, logging};
  ControlConfig config;
  TempDir dir;
  const std::string state_dir = dir.path().string();
  control::CommandRegistry commands(clock, fs, dir / "commands.json");
  status::AgentInfo info;
  info.phase = "running";
  info.started = clock.now();
  info.config_hash = std::string(64, 'f');
  control::ControlChannel channel(ioc.get_executor(), api, config, ProxyConfig{}, state_dir, commands, info);
  clock.advance(std::chrono::seconds(42));
  auto m = control::decode(channel.heartbeat_text("hb-1"), control::Limits{});
  REQUIRE(m.ok());
  CHECK(m->type == "heartbeat");
  CHECK(m->id == "hb-1");
  CHECK(m->ts == iso8601(clock.wall_now()));
  CHECK(m->body == channel.heartbeat_body());
  CHECK(m->body.at("uptime_s") == 42);
  CHECK(m->body.at("subsystems").at("we\"ird\\name") == "ok");
  CHECK(m->body.at("gpu").at("unhealthy").at(0) == 3);
}
