#include <catch2/catch.hpp>

#include "common/state.hpp"
#include "tests/fakes/fake_clock.hpp"

using namespace instanced;

TEST_CASE("state changes become events, and the overall state is the worst", "[state]") {
  testing::FakeClock clock;
  StateRegistry reg(clock, 4);
  std::vector<std::string> heard;
  auto id = reg.subscribe([&](const Event& e) { heard.push_back(e.subsystem + ":" + e.type); });

  reg.publish("disk", Health::ok, "plenty of space");
  reg.publish("mounts", Health::ok, "2 mounted");
  CHECK(reg.overall() == Health::ok);
  CHECK(reg.problems().empty());

  reg.publish("disk", Health::ok, "still plenty");  // same health: no event
  CHECK(heard.size() == 2);

  clock.advance(std::chrono::seconds(5));
  reg.publish("disk", Health::degraded, "4.1 GiB free on /");
  CHECK(reg.overall() == Health::degraded);
  REQUIRE(heard.size() == 3);
  const Event& e = reg.events().back();
  CHECK(e.type == "state_changed");
  CHECK(e.message == "4.1 GiB free on /");
  CHECK(e.data.at("from") == "ok");
  CHECK(e.data.at("to") == "degraded");
  CHECK(reg.subsystems().at("disk").since == clock.wall_now());
  REQUIRE(reg.problems().size() == 1);
  CHECK(reg.problems()[0] == "disk: 4.1 GiB free on / (degraded)");

  reg.publish("mounts", Health::failed, "share unreachable");
  CHECK(reg.overall() == Health::failed);

  SECTION("the event log is bounded and keeps sequence numbers") {
    for (int i = 0; i < 10; ++i) reg.emit("jobs", "job_finished", "done");
    CHECK(reg.events().size() == 4);
    CHECK(reg.events().back().seq == 14);
    CHECK(reg.metrics().value("instanced_events_total", {{"subsystem", "jobs"}, {"type", "job_finished"}}) == 10);
  }
  SECTION("unsubscribed listeners hear nothing more") {
    reg.unsubscribe(id);
    reg.emit("jobs", "x", "y");
    CHECK(heard.size() == 4);
  }
}

TEST_CASE("metrics keep gauges and counters per label set", "[state]") {
  Metrics m;
  m.set_gauge("g", "a gauge", {{"path", "/"}}, 5);
  m.set_gauge("g", "a gauge", {{"path", "/"}}, 7);
  m.add_counter("c_total", "a counter", {});
  m.add_counter("c_total", "a counter", {}, 2);
  CHECK(m.value("g", {{"path", "/"}}) == 7);
  CHECK(m.value("c_total") == 3);
  CHECK(m.families().at("c_total").type == Metrics::Type::counter);
}
