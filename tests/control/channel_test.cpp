// The control channel of the real agent against the development control plane
// (instanced-devcp), both real processes on loopback.
#include <algorithm>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <fstream>
#include <optional>
#include <sstream>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/tinyproxy.hpp"
#include "tests/support/tmpfs.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

std::string agent_config(const std::string& endpoint, const std::string& extra = "") {
  // No test asks the machine's own metadata address (169.254.169.254) unless it says so.
  const std::string inventory = extra.find("inventory:") == std::string::npos ? "inventory:\n  metadata_endpoint: ''\n" : "";
  return "instance:\n  name: ws-test\nstate_dir: {dir}/state\nstatus:\n  socket: {dir}/status.sock\n  group: root\n"
         "control:\n  endpoint: " + endpoint + "\n  insecure: true\n  token_file: {dir}/token\n"
         "  initial_delay_max: 0s\n  heartbeat_interval: 200ms\n  backoff_initial: 100ms\n  backoff_max: 400ms\n"
         "  reconnect_spread: 200ms\n" + extra + inventory;
}

json::value control_status(const AgentProcess& agent) {
  return json::parse(agent.curl("http://localhost/v1/status").output).at("subsystems").at("control");
}

bool has(const json::value& v, const char* instance) { return v.is_object() && v.as_object().contains(instance); }

std::string last_error(const AgentProcess& agent) {
  auto d = control_status(agent).at("details");
  if (!d.as_object().contains("last_error")) return "";
  return std::string(d.at("last_error").as_string());
}

// Until a connection attempt has failed with an error that holds `text`: the moment after
// which "it did not connect" means something.
bool wait_error(const AgentProcess& agent, const std::string& text = "") {
  return eventually([&] {
    auto e = last_error(agent);
    return !e.empty() && e.find(text) != std::string::npos;
  });
}

}  // namespace

namespace {

// Events of `type` from `subsystem` among devcp's recent events of ws-test.
int recent(const DevCp& cp, const char* subsystem, const char* type) {
  auto v = cp.instances();
  if (!has(v, "ws-test")) return 0;
  int n = 0;
  for (const auto& e : v.at("ws-test").at("recent_events").as_array())
    n += e.at("subsystem") == subsystem && e.at("type") == type;
  return n;
}

// set_config's tests: an agent whose disk guardian watches the test's folder with limits it
// never reaches, so that a pushed limit can make it less healthy.
std::string set_config_agent(const DevCp& cp) {
  return agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent",
                      "  set_config_confirm_after: 2s\ndisk:\n  interval: 100ms\n  hold: 0s\n  scan_root: {dir}\n  paths:\n"
                      "    - path: {dir}\n      low: 1KiB\n      recovery: 1KiB\n");
}

// A development control plane, and an agent of set_config_agent() connected to it.
class SetConfigAgent {
 public:
  SetConfigAgent() : cp(dir) {
    cp.start();
    agent_.emplace(dir, set_config_agent(cp));
    REQUIRE(agent_->start_and_wait_ready());
    REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test") && v.at("ws-test").at("connected") == true; }));
  }

 protected:
  TempDir dir;
  DevCp cp;
  std::optional<AgentProcess> agent_;  // made once the control plane's port is known; stopped first
};

// set_config with a disk limit the test's folder is below.
std::string push_low_disk(const std::string& id, const TempDir& dir) {
  return fmt::format(R"({{"id":"{0}","name":"set_config","args":{{"yaml":"disk:\n  interval: 100ms\n  )"
                     R"(scan_root: {1}\n  paths:\n    - path: {1}\n      low: 1000TiB\n      recovery: 1KiB\n"}}}})",
                     id, dir.path().string());
}

json::value result_of(const DevCp& cp, const std::string& id) {
  REQUIRE(cp.wait([&](const json::value& v) { return v.at("ws-test").at("results").as_object().contains(id); }));
  return cp.instances().at("ws-test").at("results").at(id);
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("hello and heartbeats reach the development control plane", "[control][channel]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test") && v.at("ws-test").at("heartbeats").to_number<std::int64_t>() >= 3; }));
  auto i = cp.instances().at("ws-test");
  CHECK(i.at("connected") == true);
  CHECK(i.at("hello").at("agent_version") == INSTANCED_VERSION);
  CHECK(i.at("hello").at("config_hash").as_string().size() == 64);
  CHECK(i.at("heartbeat").at("state") == "ok");
  CHECK(i.at("heartbeat").at("subsystems").at("control") == "ok");
  CHECK(json::serialize(i.at("heartbeat")).size() < 512);
  // devcp acknowledges heartbeats: the agent times the round trip.
  CHECK_THAT(agent.curl("http://localhost/metrics").output, Catch::Contains("instanced_control_heartbeat_rtt_seconds "));
  auto c = control_status(agent);
  CHECK(c.at("state") == "ok");
  CHECK(c.at("details").at("state") == "connected");
  auto ctl = run_command(instancectl_binary() + " --socket " + agent.socket().string() + " control");
  CHECK(ctl.exit_code == 0);
  CHECK_THAT(ctl.output, Catch::StartsWith("control: ok - connected to ws://127.0.0.1:") && Catch::Contains("outbox_pending"));

  SECTION("commands: results, at-most-once ids, unsupported, prepare_stop") {
    CHECK(cp.command("ws-test", R"({"id":"cmd-1","name":"ping"})") == R"({"id":"cmd-1"})");
    REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("cmd-1"); }));
    auto first = cp.instances().at("ws-test").at("results").at("cmd-1");
    CHECK(first.at("status") == "ok");
    CHECK(first.at("result").at("pong") == true);
    cp.command("ws-test", R"({"id":"cmd-1","name":"ping"})");
    cp.command("ws-test", R"({"id":"cmd-2","name":"frobnicate"})");
    cp.command("ws-test", R"({"id":"cmd-3","name":"prepare_stop"})");
    cp.command("ws-test", R"({"id":"cmd-4","name":"get_status"})");
    cp.command("ws-test", R"({"id":"cmd-5","name":"get_config"})");
    REQUIRE(cp.wait([](const json::value& v) {
      auto& r = v.at("ws-test").at("results").as_object();
      return r.contains("cmd-4") && r.contains("cmd-5") && r.at("cmd-1").at("received") == 2;
    }));
    auto r = cp.instances().at("ws-test").at("results");
    CHECK(r.at("cmd-1").at("result").at("time") == first.at("result").at("time"));  // not run again
    CHECK(r.at("cmd-2").at("status") == "unsupported");
    CHECK(r.at("cmd-3").at("status") == "ok");
    CHECK(r.at("cmd-4").at("result").at("phase") == "running");
    // The effective configuration, the files read, and where each set key came from.
    const auto& config = r.at("cmd-5").at("result");
    const std::string file = agent.config_file().string();
    CHECK(config.at("files") == json::array{json::value(file)});
    CHECK(config.at("origins").at("control.heartbeat_interval") == json::value(file));
    CHECK_FALSE(config.at("origins").as_object().contains("control.ping_interval"));  // a default
    CHECK_THAT(std::string(config.at("yaml").as_string()), Catch::Contains("heartbeat_interval: 200ms") &&
                                                               Catch::Contains("ping_interval: 20s"));
    CHECK(cp.instances().at("ws-test").at("duplicates") == 0);
  }
  SECTION("SIGTERM while connected is prompt, and says goodbye with a close frame (1001)") {
    agent.signal(SIGTERM);
    auto code = agent.wait_exit(5s);
    INFO(agent.log());
    REQUIRE(code);
    CHECK(*code == 0);
    REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("connected") == false; }));
    auto how = cp.instances().at("ws-test").at("last_close");
    INFO(json::serialize(how));
    CHECK(how.at("code") == 1001);
    CHECK(how.at("reason") == "agent stopping");
  }
}

// docs/protocol.md, "Configuration from the control plane".
TEST_CASE_METHOD(SetConfigAgent,
                 "set_config: a drop-in checked whole, applied, confirmed, or taken back when the agent is less healthy",
                 "[control][channel][set_config]") {
  AgentProcess& agent = *agent_;
  const auto dropin = std::filesystem::path(agent.config_file().string() + ".d") / "90-control-plane.yaml";
  auto result = [&](const std::string& id) { return result_of(cp, id); };
  auto events = [&](const char* type) { return recent(cp, "config", type); };

  // An error in the sent text: refused with its line, nothing written.
  cp.command("ws-test", R"({"id":"bad","name":"set_config","args":{"yaml":"jobs:\n  keep_finished: 7\n  slots: -5\n"}})");
  auto bad = result("bad");
  CHECK(bad.at("status") == "invalid");
  CHECK_THAT(std::string(bad.at("error").as_string()),
             Catch::Contains(dropin.string() + ":3:") && Catch::Contains("jobs.slots"));
  CHECK_FALSE(std::filesystem::exists(dropin));
  // Self-update's keys and installer: the local files' alone.
  cp.command("ws-test", R"({"id":"keys","name":"set_config","args":{"yaml":"update:\n  installer: /tmp/x\n"}})");
  auto keys = result("keys");
  CHECK(keys.at("status") == "invalid");
  CHECK_THAT(std::string(keys.at("error").as_string()),
             Catch::Contains("update.installer: not settable from the control plane"));
  CHECK_FALSE(std::filesystem::exists(dropin));

  // A valid one: written (0600), loaded, where each key came from, then kept.
  cp.command("ws-test", R"({"id":"good","name":"set_config","args":{"yaml":"jobs:\n  keep_finished: 7\n"}})");
  auto good = result("good");
  REQUIRE(good.at("status") == "ok");
  CHECK(good.at("result").at("file") == json::value(dropin.string()));
  CHECK(slurp(dropin) == "jobs:\n  keep_finished: 7\n");
  const auto mode = std::filesystem::status(dropin).permissions() & std::filesystem::perms::all;
  CHECK(mode == (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
  cp.command("ws-test", R"({"id":"busy","name":"set_config","args":{"yaml":""}})");
  CHECK(result("busy").at("status") == "refused");  // one push at a time
  cp.command("ws-test", R"({"id":"config","name":"get_config"})");
  auto config = result("config").at("result");
  CHECK(config.at("origins").at("jobs.keep_finished") == json::value(dropin.string()));
  CHECK(config.at("config_hash") == good.at("result").at("config_hash"));
  REQUIRE(cp.wait([&](const json::value&) { return events("set_config_confirmed") == 1; }));
  CHECK(slurp(dropin) == "jobs:\n  keep_finished: 7\n");
  CHECK_FALSE(std::filesystem::exists(dir / "state/agent/set_config.json"));

  // One that makes a subsystem less healthy (the disk guardian finds its path low): taken
  // back after the time, and the control plane is told why.
  cp.command("ws-test", push_low_disk("cut", dir));
  const bool rolled_back = cp.wait([&](const json::value&) { return events("set_config_rolled_back") == 1; }, 30s);
  INFO(agent.log());
  REQUIRE(rolled_back);
  CHECK(result("cut").at("status") == "ok");  // it was applied, then taken back
  CHECK(slurp(dropin) == "jobs:\n  keep_finished: 7\n");  // the previous drop-in is back
  auto v = cp.instances().at("ws-test").at("recent_events").as_array();
  auto back = std::find_if(v.begin(), v.end(), [](const json::value& e) { return e.at("type") == "set_config_rolled_back"; });
  REQUIRE(back != v.end());
  CHECK_THAT(std::string(back->at("message").as_string()), Catch::Contains("less healthy than before the push: disk: " + dir.path().string() + " is low"));
  CHECK(eventually([&] { return json::parse(agent.curl("http://localhost/v1/status").output).at("subsystems").at("disk").at("state") == "ok"; }));
  CHECK(events("set_config_confirmed") == 1);

  // An empty text removes the drop-in; a site can refuse pushes altogether.
  REQUIRE(cp.wait([&](const json::value&) { return !std::filesystem::exists(dir / "state/agent/set_config.json"); }));
  cp.command("ws-test", R"({"id":"clear","name":"set_config","args":{"yaml":""}})");
  CHECK(result("clear").at("status") == "ok");
  CHECK_FALSE(std::filesystem::exists(dropin));
  REQUIRE(cp.wait([&](const json::value&) { return events("set_config_confirmed") == 2; }));
  cp.command("ws-test", R"({"id":"off","name":"set_config","args":{"yaml":"control:\n  allow_set_config: false\n"}})");
  CHECK(result("off").at("status") == "ok");
  cp.command("ws-test", R"({"id":"refused","name":"set_config","args":{"yaml":""}})");
  CHECK(result("refused").at("status") == "refused");
  CHECK_THAT(std::string(result("refused").at("error").as_string()), Catch::Contains("control.allow_set_config is false"));
}

TEST_CASE_METHOD(SetConfigAgent, "set_config: a push under confirmation when the agent is killed is judged after the restart",
                 "[control][channel][set_config]") {
  AgentProcess& agent = *agent_;
  cp.command("ws-test", push_low_disk("low", dir));
  REQUIRE(result_of(cp, "low").at("status") == "ok");
  agent.signal(SIGKILL);
  REQUIRE(agent.wait_exit(10s));
  const auto dropin = std::filesystem::path(agent.config_file().string() + ".d") / "90-control-plane.yaml";
  CHECK(std::filesystem::exists(dropin));  // the push is in force
  CHECK(std::filesystem::exists(dir / "state/agent/set_config.json"));  // and what undoes it is kept

  REQUIRE(agent.start_and_wait_ready());
  CHECK(agent.wait_log("(the agent restarted meanwhile)"));
  REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "config", "set_config_rolled_back") == 1; }, 30s));
  CHECK_FALSE(std::filesystem::exists(dropin));  // there was none before the push
  CHECK_FALSE(std::filesystem::exists(dir / "state/agent/set_config.json"));
  CHECK(recent(cp, "config", "set_config_confirmed") == 0);
}

TEST_CASE("events during an outage arrive after the reconnect, in order, once", "[control][channel][outage]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  const int port = cp.agent_port, api = cp.api_port;
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
  cp.stop();
  // While the control plane is away: a broken reload (two events), then a good one.
  dir.write("instanced.yaml", expand(agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent", "log:\n  level: x\n"), dir));
  agent.signal(SIGHUP);
  REQUIRE(agent.notify().wait_for("READY=1", 5s));
  dir.write("instanced.yaml", expand(agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent"), dir));
  agent.signal(SIGHUP);
  REQUIRE(agent.notify().wait_for("READY=1", 5s));
  REQUIRE(eventually([&] { return control_status(agent).at("details").at("outbox_pending").as_int64() >= 3; }));
  auto c = control_status(agent);
  CHECK(c.at("state") == "degraded");
  CHECK(c.at("details").at("outbox_pending").as_int64() >= 3);

  cp.start("127.0.0.1:" + std::to_string(port), "127.0.0.1:" + std::to_string(api));
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test") && v.at("ws-test").at("events").to_number<std::int64_t>() >= 3; }));
  auto i = cp.instances().at("ws-test");
  CHECK(i.at("duplicates") == 0);
  REQUIRE(cp.wait([&](const json::value&) { return control_status(agent).at("details").at("outbox_pending") == 0; }));
  CHECK(control_status(agent).at("state") == "ok");
  // The channel's own events arrive too: the drop, the return, and how long and why.
  REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "control", "reconnected") == 1; }));
  CHECK(recent(cp, "control", "state_changed") >= 2);  // ok -> degraded, degraded -> ok
  auto seen = cp.instances();
  for (const auto& e : seen.at("ws-test").at("recent_events").as_array())
    if (e.at("subsystem") == "control" && e.at("type") == "reconnected") {
      CHECK(e.at("data").at("down_seconds").to_number<double>() > 0);
      CHECK_FALSE(e.at("data").at("reason").as_string().empty());
    }
}


TEST_CASE("a full state folder: events still reach the control plane, and are written once there is room",
          "[control][channel][enospc]") {
  TempDir dir;
  Tmpfs state(dir, "state", "size=512k");
  // Full before the agent starts: its outbox log has no page with room left in it.
  REQUIRE(run_command("dd if=/dev/zero of=" + (dir / "state/fill").string() + " bs=4k 2>/dev/null").exit_code != 0);
  DevCp cp(dir);
  cp.start();
  const int port = cp.agent_port, api = cp.api_port;
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
  auto reload = [&] {
    agent.signal(SIGHUP);
    REQUIRE(agent.notify().wait_for("READY=1", 5s));
  };
  int reloads = 0;
  for (int i = 0; i < 4; ++i) reload(), ++reloads;
  REQUIRE(agent.log().find("outbox.log: No space left on device") != std::string::npos);
  // Delivered while the disk is full: held in memory, sent, acknowledged.
  CHECK(cp.wait([&](const json::value&) { return recent(cp, "config", "reloaded") == reloads; }));
  // ... and their acks back at the agent: an event the control plane has but the agent has
  // not seen acknowledged is sent again after the reconnect below (at least once), which
  // would count twice at the restarted control plane.
  REQUIRE(eventually([&] {
    auto d = control_status(agent).at("details");
    return d.at("outbox_pending") == 0 && d.at("outbox_held") == 0;
  }));

  // Cut off and full: held, then written when space returns, then sent on reconnect.
  cp.stop();
  for (int i = 0; i < 3; ++i) reload(), ++reloads;
  auto held = control_status(agent).at("details");
  CHECK(held.at("outbox_held").as_int64() >= 3);
  std::filesystem::remove(dir / "state/fill");
  REQUIRE(cp.wait([&](const json::value&) { return control_status(agent).at("details").at("outbox_held") == 0; }, 15s));
  CHECK_THAT(agent.log(), Catch::Contains("outbox: written again"));
  cp.start("127.0.0.1:" + std::to_string(port), "127.0.0.1:" + std::to_string(api));
  REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "config", "reloaded") == 3; }, 15s));
  CHECK(cp.instances().at("ws-test").at("duplicates") == 0);
  CHECK(cp.instances().at("ws-test").at("hello").at("outbox").at("held") == 0);
  // One episode of the outbox, logged once (and its end once), however many writes failed.
  // (Other state files say it in their own lines: the run record at start.)
  CHECK(count_of(agent.log(), "outbox.log: No space left on device") == 1);
  CHECK(count_of(agent.log(), "outbox: written again") == 1);
  CHECK_THAT(agent.curl("http://localhost/metrics").output, Catch::Contains("instanced_control_outbox_write_failures_total"));
}

TEST_CASE("kill -9 between a result and its ack: resent after restart, not executed again", "[control][channel][crash]") {
  TempDir dir;
  DevCp cp(dir, {"--no-ack"});
  cp.start();
  auto config = agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent");
  json::value first;
  {
    AgentProcess agent(dir, config);
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
    cp.command("ws-test", R"({"id":"k-1","name":"ping"})");
    REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("k-1"); }));
    first = cp.instances().at("ws-test").at("results").at("k-1");
    agent.signal(SIGKILL);
    REQUIRE(agent.wait_exit(5s));
  }
  AgentProcess again(dir, config);
  REQUIRE(again.start_and_wait_ready());
  // The unacknowledged result comes again on the new connection...
  REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("connects") == 2 && v.at("ws-test").at("results").at("k-1").at("received") == 2; }));
  // ...and the same command id gets the stored result, not a second run.
  cp.command("ws-test", R"({"id":"k-1","name":"ping"})");
  REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").at("k-1").at("received") == 3; }));
  CHECK(cp.instances().at("ws-test").at("results").at("k-1").at("result").at("time") == first.at("result").at("time"));
}

TEST_CASE("a peer that stops answering pings is given up (after two ping intervals of silence) and connected to again", "[control][channel][liveness]") {
  TempDir dir;
  DevCp cp(dir, {"--freeze-after-hello"});
  cp.start();
  std::string cfg = agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent");
  const std::string hb = "  heartbeat_interval: 200ms";
  cfg.replace(cfg.find(hb), hb.size(), "  heartbeat_interval: 10s\n  ping_interval: 300ms");
  AgentProcess agent(dir, cfg);
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
  // Connected, then silence from the peer: the agent must drop it (its pings unanswered
  // for two ping intervals: nothing else reads the connection) and connect again.
  CHECK(eventually([&] { return cp.instances().at("ws-test").at("connects").to_number<int>() >= 2; }));
  INFO(agent.log());
  CHECK_THAT(agent.log(), Catch::Contains("control channel to ws://127.0.0.1:") && Catch::Contains("timeout"));
}

TEST_CASE("a rotated token is used without a restart", "[control][channel][token]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  TempDir other;
  other.write("token", "old-token\n");
  std::filesystem::permissions(other / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto cfg = agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent");
  cfg.replace(cfg.find("{dir}/token"), 11, (other / "token").string());
  AgentProcess agent(dir, cfg);
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(wait_error(agent));
  CHECK_FALSE(has(cp.instances(), "ws-test"));  // refused with the old token
  // Rotate: write the new token in place (as a secret agent or an operator would).
  std::filesystem::copy_file(dir / "token", other / "token", std::filesystem::copy_options::overwrite_existing);
  CHECK(cp.wait([](const json::value& v) { return has(v, "ws-test"); }, 5s));
}

TEST_CASE("refusals: token file mode, wrong token, ws:// without insecure", "[control][channel]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  auto endpoint = "ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent";
  SECTION("a token file readable by others is not used") {
    std::filesystem::permissions(dir / "token", std::filesystem::perms::others_read, std::filesystem::perm_options::add);
    AgentProcess agent(dir, agent_config(endpoint));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(wait_error(agent, "lets others read it"));
    auto c = control_status(agent);
    CHECK(c.at("state") == "degraded");
    CHECK_THAT(std::string(c.at("details").at("last_error").as_string()), Catch::Contains("lets others read it; chmod 600 it"));
  }
  SECTION("a wrong token is refused by the control plane") {
    TempDir other;
    other.write("token", "wrong\n");
    std::filesystem::permissions(other / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    auto cfg = agent_config(endpoint);
    cfg.replace(cfg.find("{dir}/token"), 11, (other / "token").string());
    AgentProcess agent(dir, cfg);
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(wait_error(agent));
    CHECK(control_status(agent).at("state") == "degraded");
    CHECK_FALSE(has(cp.instances(), "ws-test"));
  }
  SECTION("ws:// needs insecure: true") {
    auto cfg = agent_config(endpoint);
    cfg.replace(cfg.find("insecure: true"), 14, "insecure: false");
    AgentProcess agent(dir, cfg);
    REQUIRE(agent.start_and_wait_ready());
    // READY may come before the channel's first step has run: wait for its verdict.
    CHECK(eventually([&] { return control_status(agent).at("state") == "failed"; }));
    auto c = control_status(agent);
    CHECK_THAT(std::string(c.at("summary").as_string()), Catch::Contains("ws:// needs control.insecure: true"));
  }
}

TEST_CASE("wss: verified against the configured CA, refused otherwise", "[control][channel][tls]") {
  TempDir dir;
  auto pki = dir / "pki";
  REQUIRE(run_command(std::string(TEST_SOURCE_DIR) + "/control/make-test-ca " + pki.string()).exit_code == 0);
  auto tls = [&](std::vector<std::string> extra = {}) {
    std::vector<std::string> args{"--tls-cert", (pki / "server.pem").string(), "--tls-key", (pki / "server.key").string()};
    args.insert(args.end(), extra.begin(), extra.end());
    return args;
  };
  auto config = [&](const std::string& host, int port, const std::string& ca) {
    auto c = agent_config("wss://" + host + ":" + std::to_string(port) + "/v1/agent", "");
    c.replace(c.find("  insecure: true\n"), 17, "  ca_file: " + ca + "\n");
    return c;
  };
  SECTION("the right CA and host name: connected") {
    DevCp cp(dir, tls());
    cp.start();
    AgentProcess agent(dir, config("localhost", cp.agent_port, (pki / "ca.pem").string()));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
    CHECK(control_status(agent).at("details").at("state") == "connected");
  }
  SECTION("an untrusted CA: refused") {
    DevCp cp(dir, tls());
    cp.start();
    AgentProcess agent(dir, config("localhost", cp.agent_port, (pki / "other-ca.pem").string()));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(wait_error(agent));
    CHECK_FALSE(has(cp.instances(), "ws-test"));
    CHECK_THAT(std::string(control_status(agent).at("details").at("last_error").as_string()),
               Catch::Contains("certificate verify failed"));
    CHECK_THAT(agent.log(), Catch::Contains("certificate verify failed"));
  }
  SECTION("a certificate for another host name: refused") {
    TempDir other;
    REQUIRE(run_command(std::string(TEST_SOURCE_DIR) + "/control/make-test-ca " + other.path().string() +
                        " DNS:elsewhere.example").exit_code == 0);
    DevCp cp(dir, {"--tls-cert", (other / "server.pem").string(), "--tls-key", (other / "server.key").string()});
    cp.start();
    AgentProcess agent(dir, config("localhost", cp.agent_port, (other / "ca.pem").string()));
    REQUIRE(agent.start_and_wait_ready());
    // Says which name it wanted and which the certificate has.
    REQUIRE(cp.wait([&](const json::value&) {
      auto d = control_status(agent).at("details");
      return d.as_object().contains("last_error") && !d.at("last_error").as_string().empty();
    }));
    CHECK_THAT(std::string(control_status(agent).at("details").at("last_error").as_string()),
               Catch::Contains("the control plane's certificate is not for localhost (it is for DNS:elsewhere.example)"));
    CHECK_FALSE(has(cp.instances(), "ws-test"));
  }
  SECTION("a TLS 1.1-only server: refused") {
    DevCp cp(dir, tls({"--tls-max-version", "1.1"}));
    cp.start();
    AgentProcess agent(dir, config("localhost", cp.agent_port, (pki / "ca.pem").string()));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(wait_error(agent));
    CHECK_FALSE(has(cp.instances(), "ws-test"));
    CHECK_THAT(std::string(control_status(agent).at("details").at("last_error").as_string()),
               Catch::Contains("unsupported protocol") || Catch::Contains("no protocols available") || Catch::Contains("version"));
    INFO(agent.log());
  }
}

namespace {
// Starts tests/control/peer.py; returns the port it listens on.
int start_peer(const TempDir& dir, const std::string& extra = "") {
  dir.write("token", "peer-token\n");
  std::filesystem::permissions(dir / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto cmd = std::string("/usr/bin/python3 ") + TEST_SOURCE_DIR + "/control/peer.py --schemas " + TEST_SOURCE_DIR +
             "/../docs/schema --token-file " + (dir / "token").string() + " --ports-file " + (dir / "peer-port").string() +
             " --report " + (dir / "report.json").string() + " " + extra + " > " + (dir / "peer.log").string() + " 2>&1 &";
  REQUIRE(run_command(cmd).exit_code == 0);
  int port = 0;
  // The file may be seen before its number is written.
  REQUIRE(eventually([&] { return (std::ifstream(dir / "peer-port") >> port) && port > 0; }));
  return port;
}

// tests/inventory/imds.py, a stand-in for Azure's metadata service, for the test's length.
struct MetadataService {
  explicit MetadataService(const TempDir& dir, const std::string& extra = "") {
    auto r = run_command(std::string("/usr/bin/python3 ") + TEST_SOURCE_DIR + "/inventory/imds.py --port-file " +
                         (dir / "imds-port").string() + " " + extra + " > " + (dir / "imds.log").string() +
                         " 2>&1 & echo $!");
    pid = std::stoi(r.output);
    int port = 0;
    REQUIRE(eventually([&] { return (std::ifstream(dir / "imds-port") >> port) && port > 0; }));
    endpoint = "http://127.0.0.1:" + std::to_string(port) + "/metadata/instance/compute?api-version=2021-02-01";
  }
  ~MetadataService() { ::kill(pid, SIGKILL); }
  pid_t pid = -1;
  std::string endpoint;
};

json::value wait_report(const TempDir& dir) {
  // Complete once it parses (the peer may still be writing it when it appears).
  json::value report;
  REQUIRE(eventually([&] {
    boost::system::error_code ec;
    report = json::parse(slurp(dir / "report.json"), ec);
    return !ec;
  }, 15s));
  return report;
}
}  // namespace

TEST_CASE("an independent Python peer: every message validates against docs/schema", "[control][channel][schema]") {
  TempDir dir;
  int port = start_peer(dir);
  MetadataService metadata(dir);
  const std::string& imds = metadata.endpoint;
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent",
                                       "inventory:\n  metadata_endpoint: " + imds + "\n"));
  REQUIRE(agent.start_and_wait_ready());
  // Make an event happen: a reload.
  agent.signal(SIGHUP);
  auto report = wait_report(dir);
  INFO(json::serialize(report));
  CHECK(report.at("errors").as_array().empty());
  CHECK(report.at("types").at("hello") == 1);
  CHECK(report.at("types").at("heartbeat").to_number<int>() >= 3);
  CHECK(report.at("types").at("event").to_number<int>() >= 1);
  auto& results = report.at("results");
  CHECK(results.at("py-1").at("status") == "ok");
  CHECK(results.at("py-2").at("status") == "unsupported");
  CHECK(results.at("py-3").at("status") == "ok");
  CHECK(results.at("py-4").at("status") == "expired");
  for (const auto& b : report.at("heartbeat_bytes").as_array()) CHECK(b.to_number<int>() <= 512);
  // The inventory: in hello (its schema checked by the peer), the same from get_inventory.
  const auto& inventory = report.at("hello").at("inventory");
  CHECK(inventory.at("cloud") == json::parse(R"({"provider":"azure","vm_id":"13f56399-bd52-4150-9748-7190aae1ff21",
    "size":"Standard_NC24ads_A100_v4","region":"westeurope","image":"microsoft-dsvm:ubuntu-hpc:1804:18.04.2021120101"})"));
  CHECK(inventory.at("agent").at("version") == INSTANCED_VERSION);
  CHECK(inventory.at("cpu").at("count").to_number<long>() == ::sysconf(_SC_NPROCESSORS_ONLN));
  CHECK_FALSE(inventory.as_object().contains("gpu"));  // no NVIDIA driver on this machine
  CHECK(results.at("py-5").at("status") == "ok");
  CHECK(results.at("py-5").at("result").at("inventory").at("cloud") == inventory.at("cloud"));
  CHECK_THAT(slurp(dir / "imds.log"), Catch::Contains("GET /metadata/instance/compute?api-version=2021-02-01 Metadata=true"));
  std::printf("hello with the inventory (no GPUs): %zu bytes; the inventory alone %zu\n",
              json::serialize(report.at("hello")).size(), json::serialize(inventory).size());
}

TEST_CASE("without a metadata service that answers in time, hello comes without the VM's identity", "[control][channel][schema]") {
  TempDir dir;
  int port = start_peer(dir);
  MetadataService metadata(dir, "--delay 30");
  const std::string& imds = metadata.endpoint;
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent",
                                       "inventory:\n  metadata_endpoint: " + imds + "\n  metadata_timeout: 300ms\n"));
  REQUIRE(agent.start_and_wait_ready());
  auto report = wait_report(dir);
  INFO(json::serialize(report) << "\n" << agent.log());
  CHECK(report.at("errors").as_array().empty());
  const auto& inventory = report.at("hello").at("inventory");
  CHECK_FALSE(inventory.as_object().contains("cloud"));
  CHECK(inventory.at("agent").at("version") == INSTANCED_VERSION);
  CHECK(agent.wait_log("no VM identity from the metadata service at " + imds + ": GET "));
  CHECK_THAT(agent.log(), Catch::Contains("no answer within the timeout"));
}

TEST_CASE("through an HTTP CONNECT proxy, and refused cleanly when the proxy refuses", "[control][channel][proxy]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  auto with_proxy = [&](int proxy_port) {
    auto c = agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent");
    c.replace(c.find("  insecure: true\n"), 17, "  insecure: true\n  proxy: http://127.0.0.1:" + std::to_string(proxy_port) + "\n");
    return c;
  };
  SECTION("tunnelled") {
    TinyProxy proxy(dir);
    AgentProcess agent(dir, with_proxy(proxy.port));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
    CHECK_THAT(proxy.output(), Catch::Contains("CONNECT 127.0.0.1:" + std::to_string(cp.agent_port)));
  }
  SECTION("refused by the proxy") {
    TinyProxy proxy(dir, {.connect_ports = "443", .basic_auth = ""});
    AgentProcess agent(dir, with_proxy(proxy.port));
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(wait_error(agent));
    CHECK_FALSE(has(cp.instances(), "ws-test"));
    CHECK_THAT(std::string(control_status(agent).at("details").at("last_error").as_string()),
               Catch::Contains("refused CONNECT 127.0.0.1:" + std::to_string(cp.agent_port) + ": HTTP 403"));
  }
}

TEST_CASE("a misbehaving peer: malformed JSON, unknown type, oversized frame, close mid-frame", "[control][channel][faults]") {
  TempDir dir;
  int port = start_peer(dir, "--abuse");
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(port) + "/v1/agent"));
  REQUIRE(agent.start_and_wait_ready());
  auto report = wait_report(dir);
  INFO(json::serialize(report));
  CHECK(report.at("errors").as_array().empty());
  // Garbage did not stop command handling on the same connection...
  CHECK(report.at("results").at("abuse-ping").at("status") == "ok");
  // A broken command with an id that can be echoed is answered; one without is only counted.
  CHECK(report.at("results").at("bad-body-1").at("status") == "invalid");
  CHECK(report.at("results").at("bad-body-1").at("error") == "body: missing or not an object");
  CHECK(report.at("results").as_object().size() == 2);
  // ...the oversized frame and the half frame each cost a connection, and it came back.
  CHECK(report.at("connections").to_number<int>() >= 3);
  CHECK(agent.running());
  auto log = agent.log();
  CHECK_THAT(log, Catch::Contains("control plane sent an invalid message: not valid JSON"));
  CHECK_THAT(log, Catch::Contains("control plane sent a message of unknown type 'surprise'"));
  CHECK_THAT(log, Catch::Contains("The WebSocket message exceeded the locally configured limit; retrying"));
  auto metrics = agent.curl("http://localhost/metrics").output;
  CHECK_THAT(metrics, Catch::Contains(R"(instanced_control_invalid_messages_total{answered="no"} 2)"));
  CHECK_THAT(metrics, Catch::Contains(R"(instanced_control_invalid_messages_total{answered="yes"} 1)"));
}

TEST_CASE("rerun_setup from the control plane: the result carries the run's outcome, events its lines",
          "[control][channel][setup]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent",
                                       "setup:\n  log_dir: {dir}/logs\n  scripts:\n"
                                       "    - name: flaky\n      content: |\n"
                                       "        echo attempt\n        test -e {dir}/fixed || exit 4\n"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
  // The failure of the first run arrives as an event with the script's last lines.
  REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "setup", "script_finished") > 0; }));
  auto seen = cp.instances();  // a named value: a range-for over a temporary's member dangles
  for (const auto& e : seen.at("ws-test").at("recent_events").as_array())
    if (e.at("type") == "script_finished") {
      CHECK(e.at("data").at("state") == "failed");
      CHECK(e.at("data").at("tail").as_array().back() == "attempt");
    }
  cp.command("ws-test", R"({"id":"rr-1","name":"rerun_setup","args":{}})");
  cp.command("ws-test", R"({"id":"rr-2","name":"rerun_setup","args":{"name":"nosuch"}})");
  std::ofstream(dir / "fixed").put('\n');
  cp.command("ws-test", R"({"id":"rr-3","name":"rerun_setup","args":{"name":"flaky"}})");
  REQUIRE(cp.wait([](const json::value& v) {
    auto& r = v.at("ws-test").at("results").as_object();
    return r.contains("rr-1") && r.contains("rr-2") && r.contains("rr-3");
  }));
  auto r = cp.instances().at("ws-test").at("results");
  CHECK(r.at("rr-1").at("status") == "invalid");
  CHECK(r.at("rr-1").at("error") == "args.name: missing or not a string");
  CHECK(r.at("rr-2").at("status") == "refused");
  CHECK(r.at("rr-2").at("error") == "no setup script named 'nosuch'");
  CHECK(r.at("rr-3").at("status") == "ok");
  CHECK(r.at("rr-3").at("result").at("state") == "succeeded");
  CHECK(r.at("rr-3").at("result").at("run").at("exit_code") == 0);
}

TEST_CASE("a command resent while it runs is executed once and both get its result", "[control][channel][commands]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent",
                                       "setup:\n  log_dir: {dir}/logs\n  scripts:\n"
                                       "    - name: s1\n      content: |\n"
                                       "        echo x >> {dir}/runs\n        sleep 1\n        exit 3\n"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([&](const json::value& v) { return has(v, "ws-test") && slurp(dir / "runs") == "x\n"; }));
  // Wait for the first run (at start) to end, then rerun it twice with the same id.
  REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "setup", "script_finished") > 0; }));
  cp.command("ws-test", R"({"id":"rr-dup","name":"rerun_setup","args":{"name":"s1"}})");
  REQUIRE(eventually([&] { return slurp(dir / "runs") == "x\nx\n"; }));  // the resend comes while the run is under way
  cp.command("ws-test", R"({"id":"rr-dup","name":"rerun_setup","args":{"name":"s1"}})");
  REQUIRE(cp.wait([](const json::value& v) {
    auto& r = v.at("ws-test").at("results").as_object();
    return r.contains("rr-dup") && r.at("rr-dup").at("received") == 2;
  }, 20s));
  auto r = cp.instances().at("ws-test").at("results").at("rr-dup");
  INFO(json::serialize(r));
  // Both answers are the run's outcome (not a refusal of the second as "running").
  const auto& statuses = r.at("statuses").as_array();
  REQUIRE(statuses.size() == 2);
  for (const auto& st : statuses) {
    CHECK(st.at("status") == "failed");
    CHECK(st.at("error") == "exit status 3");
  }
  CHECK(r.at("result").at("state") == "failed");
  CHECK(r.at("result").at("run").at("exit_code") == 3);
  CHECK(slurp(dir / "runs") == "x\nx\n");  // at start, and once for the command
}

TEST_CASE("kill -9 while a command runs: after the restart it is answered interrupted, never run again",
          "[control][channel][commands][crash]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  auto config = agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent",
                             "setup:\n  log_dir: {dir}/logs\n  interrupted: fail\n  scripts:\n"
                             "    - name: s1\n      content: |\n"
                             "        echo x >> {dir}/runs\n        test -e {dir}/long || exit 4\n        sleep 60\n");
  {
    AgentProcess agent(dir, config);
    REQUIRE(agent.start_and_wait_ready());
    REQUIRE(cp.wait([&](const json::value& v) { return has(v, "ws-test") && slurp(dir / "runs") == "x\n"; }));
    REQUIRE(cp.wait([&](const json::value&) { return recent(cp, "setup", "script_finished") > 0; }));
    std::ofstream(dir / "long").put('\n');
    cp.command("ws-test", R"({"id":"rr-long","name":"rerun_setup","args":{"name":"s1"}})");
    REQUIRE(cp.wait([&](const json::value&) { return slurp(dir / "runs") == "x\nx\n"; }));
    agent.signal(SIGKILL);
    REQUIRE(agent.wait_exit(5s));
  }
  AgentProcess again(dir, config);
  REQUIRE(again.start_and_wait_ready());
  // Reported without being asked again...
  REQUIRE(cp.wait([](const json::value& v) {
    auto& r = v.at("ws-test").at("results").as_object();
    return r.contains("rr-long");
  }, 15s));
  auto r = cp.instances().at("ws-test").at("results").at("rr-long");
  CHECK(r.at("status") == "interrupted");
  CHECK(r.at("name") == "rerun_setup");
  // ...and a resend gets the same answer; nothing runs again.
  cp.command("ws-test", R"({"id":"rr-long","name":"rerun_setup","args":{"name":"s1"}})");
  REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").at("rr-long").at("received") == 2; }));
  CHECK(cp.instances().at("ws-test").at("results").at("rr-long").at("status") == "interrupted");
  CHECK(slurp(dir / "runs") == "x\nx\n");
  CHECK_THAT(again.log(), Catch::Contains("command rr-long (rerun_setup) was running when the agent stopped"));
}

TEST_CASE("prepare_stop drains: a running setup script is waited for, and refuses the stop while it runs on",
          "[control][channel][setup]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  AgentProcess agent(dir, agent_config("ws://127.0.0.1:" + std::to_string(cp.agent_port) + "/v1/agent",
                                       "setup:\n  log_dir: {dir}/logs\n  stop_wait: 500ms\n  scripts:\n"
                                       "    - name: slow\n      content: |\n"
                                       "        while [ ! -e {dir}/finish ]; do sleep 0.1; done\n"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return has(v, "ws-test"); }));
  cp.command("ws-test", R"({"id":"s-1","name":"prepare_stop"})");
  REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("s-1"); }));
  auto refused = cp.instances().at("ws-test").at("results").at("s-1");
  CHECK(refused.at("status") == "refused");
  CHECK_THAT(std::string(refused.at("error").as_string()),
             Catch::Contains("setup: prepare_stop refused: setup script slow is still running after 500ms"));
  // The script ends while the next prepare_stop waits for it.
  cp.command("ws-test", R"({"id":"s-2","name":"prepare_stop"})");
  REQUIRE(eventually([&] {
    auto v = json::parse(agent.curl("http://localhost/v1/setup").output);
    return v.as_object().contains("drain_waiting") && v.at("drain_waiting") == "prepare_stop";
  }));
  std::ofstream(dir / "finish").put('\n');
  REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("s-2"); }));
  auto ok = cp.instances().at("ws-test").at("results").at("s-2");
  CHECK(ok.at("status") == "ok");
  CHECK_THAT(std::string(ok.at("result").at("drained").at("setup").as_string()), Catch::StartsWith("waited"));
}
