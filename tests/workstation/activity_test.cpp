// The idle tracker under a simulated clock, one activity source at a time, and the
// pieces of the app probes that need no server (verdicts, Jupyter's JSON).
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include "agent/apps/probe.hpp"
#include "agent/idle/activity.hpp"
#include "tests/fakes/fake_clock.hpp"

using namespace instanced;
using namespace std::chrono_literals;
using idle::IdleTracker;
using idle::Sample;
using testing::FakeClock;

namespace {

struct Simulated {
  FakeClock clock;
  IdleTracker tracker{idle::Thresholds{30min, 10, 5}, clock.wall_now()};
  // A look at `s` now; the clock then moves on by `step`.
  void look(Sample s, Clock::steady_time::duration step = 1min) {
    s.at = clock.wall_now();
    tracker.observe(s);
    clock.advance(step);
  }
};

}  // namespace

TEST_CASE("idle: quiet for 'after' since the agent started, and each source of activity resets it") {
  auto source = GENERATE(as<std::string>{}, "session", "jobs", "setup", "cpu", "gpu", "kernel busy");
  INFO(source);
  Simulated sim;
  const auto start = sim.clock.wall_now();
  for (int i = 0; i < 29; ++i) sim.look({});
  CHECK(sim.tracker.idle_since() == start);
  CHECK_FALSE(sim.tracker.idle(sim.clock.wall_now()));  // 29 minutes of 30
  CHECK(sim.tracker.not_idle_reasons(sim.clock.wall_now()).front().starts_with("quiet for 29m of the 30m"));
  sim.look({});
  CHECK(sim.tracker.idle(sim.clock.wall_now()));
  CHECK(sim.tracker.not_idle_reasons(sim.clock.wall_now()).empty());

  Sample busy;
  std::string expect;
  if (source == "session") busy.sessions = {"alice pts/0 from 10.1.2.3"}, expect = "session: alice pts/0 from 10.1.2.3";
  if (source == "jobs") busy.jobs = 3, expect = "jobs: 3 queued or running";
  if (source == "setup") busy.setup_running = true, expect = "a setup script runs";
  if (source == "cpu") busy.cpu_percent = 37.4, expect = "CPU at 37% (over 10%)";
  if (source == "gpu") busy.gpu_percent = 80, expect = "GPU at 80% (over 5%)";
  if (source == "kernel busy") busy.jupyter = apps::JupyterActivity{std::nullopt, 2, 1, 1, 0}, expect = "Jupyter: 1 kernels busy";
  const auto active_at = sim.clock.wall_now();
  sim.look(busy, 10min);
  CHECK(sim.tracker.activity() == std::vector<std::string>{expect});
  CHECK_FALSE(sim.tracker.idle_since());
  CHECK_FALSE(sim.tracker.idle(sim.clock.wall_now()));
  CHECK(sim.tracker.not_idle_reasons(sim.clock.wall_now()) == std::vector<std::string>{expect});
  // Quiet again: idle_since is the last look that saw the activity, idle 30 minutes later.
  sim.look({}, 19min);
  CHECK(sim.tracker.idle_since() == active_at);
  CHECK_FALSE(sim.tracker.idle(sim.clock.wall_now()));
  sim.look({});
  CHECK(sim.tracker.idle(sim.clock.wall_now()));
}

TEST_CASE("idle: below the thresholds is quiet, and a Jupyter kernel used between looks counts when it was used") {
  Simulated sim;
  for (int i = 0; i < 5; ++i) sim.look(Sample{{}, {}, 0, false, 9.9, 5.0, std::nullopt});
  CHECK(sim.tracker.activity().empty());
  CHECK(sim.tracker.idle_since() == sim.clock.wall_now() - 5min);
  // 40 minutes of quiet, then Jupyter says a terminal was used 12 minutes ago.
  for (int i = 0; i < 35; ++i) sim.look({});
  CHECK(sim.tracker.idle(sim.clock.wall_now()));
  auto used = sim.clock.wall_now() - 12min;
  sim.look(Sample{{}, {}, 0, false, std::nullopt, std::nullopt, apps::JupyterActivity{used, 1, 0, 0, 1}});
  CHECK(sim.tracker.activity().empty());
  CHECK(sim.tracker.idle_since() == used);
  CHECK_FALSE(sim.tracker.idle(sim.clock.wall_now()));
  // An older report changes nothing; a time in the future counts as now.
  sim.look(Sample{{}, {}, 0, false, std::nullopt, std::nullopt, apps::JupyterActivity{used - 1h, 1, 0, 0, 0}});
  CHECK(sim.tracker.idle_since() == used);
  const auto now = sim.clock.wall_now();
  sim.look(Sample{{}, {}, 0, false, std::nullopt, std::nullopt, apps::JupyterActivity{now + 1h, 1, 0, 0, 0}});
  CHECK(sim.tracker.idle_since() == now);
}

TEST_CASE("CPU utilisation between two readings of /proc/stat") {
  CHECK(idle::cpu_percent({100, 1000}, {150, 1100}) == Approx(50.0));
  CHECK_FALSE(idle::cpu_percent({100, 1000}, {100, 1000}));
  idle::RealHostActivity host;
  auto t = host.cpu_times();
  REQUIRE(t);
  CHECK(t->total >= t->busy);
  auto s = host.sessions("/nonexistent/utmp");
  REQUIRE(s);  // no utmp file: no logins recorded
  CHECK(s->empty());
}

TEST_CASE("app verdicts: up, slow or 5xx is degraded, no answer or another status is down") {
  using apps::AppState;
  auto answer = [](unsigned status, int ms) {
    return Result<apps::HttpAnswer>(apps::HttpAnswer{status, "", std::chrono::milliseconds(ms)});
  };
  CHECK(apps::judge(answer(200, 10), 200, 500ms).state == AppState::up);
  auto slow = apps::judge(answer(200, 900), 200, 500ms);
  CHECK(slow.state == AppState::degraded);
  CHECK(slow.reason == "slow: answered in 900ms (slow is over 500ms)");
  CHECK(apps::judge(answer(503, 10), 200, 500ms).reason == "answered 503 (a server error)");
  auto other = apps::judge(answer(403, 10), 200, 500ms);
  CHECK(other.state == AppState::down);
  CHECK(other.reason == "answered 403, 200 expected");
  auto none = apps::judge(Result<apps::HttpAnswer>(Error{"GET /api/status: Connection refused"}), 200, 500ms);
  CHECK(none.state == AppState::down);
  CHECK(none.reason == "GET /api/status: Connection refused");
}

TEST_CASE("Jupyter's kernels and terminals: activity, busy kernels, and errors that name the item") {
  apps::JupyterActivity a;
  auto kernels = boost::json::parse(R"([
    {"id": "k1", "name": "python3", "last_activity": "2026-11-27T10:00:00.123456Z", "execution_state": "idle", "connections": 1},
    {"id": "k2", "name": "ir", "last_activity": "2026-11-27T10:05:00+00:00", "execution_state": "busy", "connections": 2}])");
  REQUIRE(apps::add_kernels(a, kernels));
  auto terminals = boost::json::parse(R"([{"name": "1", "last_activity": "2026-11-27T10:07:30.000000Z"}])");
  REQUIRE(apps::add_terminals(a, terminals));
  CHECK(a.kernels == 2);
  CHECK(a.busy == 1);
  CHECK(a.connections == 3);
  CHECK(a.terminals == 1);
  REQUIRE(a.last);
  CHECK(iso8601(*a.last) == "2026-11-27T10:07:30.000Z");
  apps::JupyterActivity b;
  auto bad = apps::add_kernels(b, boost::json::parse(R"([{"id": "k1"}, {"id": "k2", "last_activity": "yesterday"}])"));
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message == "/api/kernels[1].last_activity: 'yesterday' is not an ISO 8601 UTC time");
  CHECK(apps::add_terminals(b, boost::json::parse(R"({"terminals": []})")).error().message == "/api/terminals: not a list");
}
