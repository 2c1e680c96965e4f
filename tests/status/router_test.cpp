#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>

#include "agent/status/router.hpp"
#include "agent/status/views.hpp"
#include "tests/fakes/fake_clock.hpp"

using namespace instanced;
using namespace instanced::status;
using namespace std::chrono_literals;

namespace {
Request get(std::string target, http::verb verb = http::verb::get) {
  Request r{verb, target, 11};
  return r;
}
}  // namespace

TEST_CASE("routing", "[status]") {
  Router router;
  router.add(http::verb::get, "/v1/x", [](const Request&) { return text_response(http::status::ok, "x"); });
  CHECK(router.handle(get("/v1/x")).body() == "x");
  CHECK(router.handle(get("/v1/x?verbose=1")).body() == "x");
  CHECK(router.handle(get("/v1/y")).result() == http::status::not_found);
  auto res = router.handle(get("/v1/x", http::verb::delete_));
  CHECK(res.result() == http::status::method_not_allowed);
  CHECK(res[http::field::allow] == "GET");
}

TEST_CASE("an asynchronous route answers through handle_async, and handle() refuses it", "[status]") {
  Router router;
  boost::asio::io_context ioc;
  boost::asio::steady_timer later(ioc);
  router.add_async(http::verb::post, "/v1/slow", [&](const Request& req) -> boost::asio::awaitable<Response> {
    later.expires_after(1ms);
    co_await later.async_wait(boost::asio::use_awaitable);  // the answer waits on the loop
    co_return text_response(http::status::accepted, "later:" + req.body());
  });
  router.add(http::verb::get, "/v1/x", [](const Request&) { return text_response(http::status::ok, "x"); });
  std::vector<Response> answers;
  auto ask = [&](Request req) -> boost::asio::awaitable<void> {
    answers.push_back(co_await router.handle_async(req));
  };
  Request slow = get("/v1/slow", http::verb::post);
  slow.body() = "body";
  boost::asio::co_spawn(ioc, ask(slow), boost::asio::detached);
  boost::asio::co_spawn(ioc, ask(get("/v1/x")), boost::asio::detached);
  boost::asio::co_spawn(ioc, ask(get("/v1/slow")), boost::asio::detached);
  ioc.run();
  REQUIRE(answers.size() == 3);
  CHECK(answers[0].body() == "x");  // the synchronous route did not wait behind the slow one
  CHECK(answers[1].result() == http::status::method_not_allowed);
  CHECK(answers[2].result() == http::status::accepted);
  CHECK(answers[2].body() == "later:body");
  CHECK(router.handle(slow).result() == http::status::internal_server_error);
}

TEST_CASE("peer authorisation: root, the group as primary or supplementary, nobody else", "[status]") {
  const gid_t ops = 990;
  CHECK(authorized(Peer{1, 0, 0, {}}, ops));
  CHECK(authorized(Peer{1, 1000, ops, {}}, ops));
  CHECK(authorized(Peer{1, 1000, 1000, {4, ops}}, ops));
  CHECK_FALSE(authorized(Peer{1, 1000, 1000, {4, 27}}, ops));
  CHECK_FALSE(authorized(Peer{}, ops));
}

TEST_CASE("agent views read the state registry", "[status]") {
  testing::FakeClock clock;
  StateRegistry state(clock);
  AgentInfo info;
  info.version = "9.9.9";
  info.instance = "ws-1";
  info.phase = "running";
  info.started = clock.now();
  info.started_wall = clock.wall_now();
  info.config_file = "/etc/instanced/instanced.yaml";
  info.config_hash = "abc";
  Router router;
  add_agent_routes(router, info, state, clock);
  state.publish("disk", Health::ok, "fine", {{"free_bytes", 123}});
  clock.advance(75s);

  auto status = boost::json::parse(router.handle(get("/v1/status")).body());
  CHECK(status.at("version") == "9.9.9");
  CHECK(status.at("state") == "ok");
  CHECK(status.at("uptime_seconds") == 75);
  CHECK(status.at("subsystems").at("disk").at("details").at("free_bytes") == 123);
  CHECK(status.at("events").as_array().size() == 1);
  CHECK(router.handle(get("/v1/health")).result() == http::status::ok);

  state.publish("disk", Health::degraded, "4 GiB free");
  auto health = router.handle(get("/v1/health"));
  CHECK(health.result() == http::status::service_unavailable);
  auto hj = boost::json::parse(health.body());
  CHECK(hj.at("reasons").at(0) == "disk: 4 GiB free (degraded)");

  SECTION("metrics carry the subsystem states and published metrics, escaped") {
    state.metrics().set_gauge("instanced_disk_free_bytes", "Free bytes.", {{"path", "/a\"b\\c\nd"}}, 5);
    auto text = render_metrics(info, state, clock);
    CHECK_THAT(text, Catch::Contains("instanced_subsystem_state{subsystem=\"disk\",state=\"degraded\"} 1"));
    CHECK_THAT(text, Catch::Contains("instanced_subsystem_state{subsystem=\"disk\",state=\"ok\"} 0"));
    CHECK_THAT(text, Catch::Contains("instanced_disk_free_bytes{path=\"/a\\\"b\\\\c\\nd\"} 5"));
    CHECK_THAT(text, Catch::Contains("instanced_build_info{version=\"9.9.9\"} 1"));
    CHECK_THAT(text, Catch::Contains("# TYPE process_cpu_seconds_total counter"));
  }
  SECTION("histograms, totals kept by their source, and series forgotten after a reload") {
    auto& m = state.metrics();
    for (double v : {0.003, 0.02, 0.02, 0.7, 40.0})
      m.observe("instanced_app_probe_duration_seconds", "Probe time.", {{"app", "jupyter"}}, v, kLatencyBuckets);
    m.set_counter("instanced_gpu_pcie_replays_total", "Replays.", {{"gpu", "0"}}, 7);
    m.set_gauge("instanced_app_up", "Up.", {{"app", "gone"}}, 1);
    m.set_gauge("instanced_app_up", "Up.", {{"app", "jupyter"}}, 1);
    auto text = render_metrics(info, state, clock);
    CHECK_THAT(text, Catch::Contains("# TYPE instanced_app_probe_duration_seconds histogram\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_bucket{app=\"jupyter\",le=\"0.005\"} 1\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_bucket{app=\"jupyter\",le=\"0.025\"} 3\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_bucket{app=\"jupyter\",le=\"30\"} 4\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_bucket{app=\"jupyter\",le=\"+Inf\"} 5\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_count{app=\"jupyter\"} 5\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_sum{app=\"jupyter\"} 40.743\n"));
    CHECK_THAT(text, Catch::Contains("# TYPE instanced_gpu_pcie_replays_total counter\ninstanced_gpu_pcie_replays_total{gpu=\"0\"} 7\n"));
    CHECK_THAT(text, Catch::Contains("instanced_app_up{app=\"gone\"} 1"));
    m.forget("instanced_app_", "app", "gone");
    text = render_metrics(info, state, clock);
    CHECK_THAT(text, !Catch::Contains("app=\"gone\""));
    CHECK_THAT(text, Catch::Contains("instanced_app_up{app=\"jupyter\"} 1"));
    CHECK_THAT(text, Catch::Contains("instanced_app_probe_duration_seconds_count{app=\"jupyter\"} 5\n"));
  }
  SECTION("starting and stopping are unhealthy") {
    state.publish("disk", Health::ok, "fine");
    info.phase = "stopping";
    CHECK(router.handle(get("/v1/health")).result() == http::status::service_unavailable);
  }
}
