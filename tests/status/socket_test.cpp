// The status socket of the real agent, with real clients: curl, instancectl, raw sockets.
#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "tests/support/agent_process.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

std::string config(const std::string& mode = "0660", int max_connections = 64) {
  return "state_dir: {dir}/state\nstatus:\n  socket: {dir}/status.sock\n  group: daemon\n  mode: \"" + mode +
         "\"\n  max_connections: " + std::to_string(max_connections) + "\n  request_timeout: 2s\n";
}

void send_all(int fd, std::string_view data) {
  while (!data.empty()) {
    ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL);
    if (n <= 0) return;
    data.remove_prefix(static_cast<std::size_t>(n));
  }
}

// Everything the server sends until it closes, or until `timeout` passes.
std::string read_until_close(int fd, std::chrono::milliseconds timeout) {
  std::string out;
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return out + "<timeout>";
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    char buf[4096];
    ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    if (n <= 0) return out;
    out.append(buf, static_cast<std::size_t>(n));
  }
}

std::string as_nobody(const std::string& cmd, const std::string& groups = "") {
  return "setpriv --reuid=nobody --regid=nogroup " + (groups.empty() ? std::string("--clear-groups") : "--groups=" + groups) +
         " " + cmd;
}

}  // namespace

TEST_CASE("curl gets status, health, version and metrics", "[status][socket]") {
  TempDir dir;
  AgentProcess agent(dir, config());
  REQUIRE(agent.start_and_wait_ready());

  auto s = agent.curl("-w '\\n%{http_code} %{content_type}' http://localhost/v1/status");
  REQUIRE(s.exit_code == 0);
  auto nl = s.output.rfind('\n');
  CHECK(s.output.substr(nl + 1) == "200 application/json");
  auto v = json::parse(s.output.substr(0, nl));
  for (auto key : {"version", "instance", "state", "phase", "uptime_seconds", "config", "subsystems", "events"})
    CHECK(v.as_object().contains(key));
  CHECK(v.at("subsystems").at("status").at("state") == "ok");
  CHECK(v.at("config").at("hash").as_string().size() == 64);

  CHECK(agent.curl("http://localhost/v1/health").output == "{\"status\":\"healthy\",\"state\":\"ok\"}\n");
  CHECK(agent.curl("-o /dev/null -w '%{http_code}' http://localhost/v1/nope").output == "404");
  CHECK(agent.curl("-o /dev/null -w '%{http_code}' -X DELETE http://localhost/v1/status").output == "405");
  CHECK(agent.curl("-o /dev/null -w '%{http_code}' -X POST http://localhost/v1/debug/stall").output == "404");

  SECTION("/metrics passes promtool check metrics") {
    dir.write("metrics.txt", agent.curl("http://localhost/metrics").output);
    auto check = run_command("promtool check metrics < " + (dir / "metrics.txt").string() + " 2>&1");
    INFO(check.output);
    CHECK(check.exit_code == 0);
    CHECK(check.output.empty());
    CHECK_THAT(agent.curl("http://localhost/metrics").output,
               Catch::Contains("instanced_status_requests_total{code=\"200\"}"));
  }
}

TEST_CASE("instancectl: tables, --json, exit codes", "[status][socket][instancectl]") {
  TempDir dir;
  AgentProcess agent(dir, config());
  REQUIRE(agent.start_and_wait_ready());
  const std::string ctl = instancectl_binary() + " --socket " + agent.socket().string();
  // A subsystem whose first look runs off the loop (the disk guardian's statvfs) is
  // `starting` until it is back; under load that can outlast READY by a moment.
  CHECK(eventually([&] { return run_command(ctl + " health").exit_code == 0; }, 10s));

  auto st = run_command(ctl + " status");
  CHECK(st.exit_code == 0);
  CHECK_THAT(st.output, Catch::Contains("SUBSYSTEM") && Catch::Contains("status") && Catch::Contains("serving"));
  CHECK(st.output.find("\033[") == std::string::npos);  // no colour when not a terminal

  auto js = run_command(ctl + " --json status");
  CHECK(js.exit_code == 0);
  CHECK(json::parse(js.output).at("phase") == "running");

  auto h = run_command("INSTANCED_SOCKET=" + agent.socket().string() + " " + instancectl_binary() + " health");
  CHECK(h.exit_code == 0);
  CHECK(h.output == "healthy\n");

  auto ver = run_command(ctl + " version");
  CHECK(ver.exit_code == 0);
  CHECK_THAT(ver.output, Catch::Contains(std::string("instanced ") + INSTANCED_VERSION));

  SECTION("degraded: exit 1 with the reasons") {
    dir.write("instanced.yaml", expand(config() + "log:\n  level: noisy\n", dir));
    agent.signal(SIGHUP);
    REQUIRE(agent.notify().wait_for("READY=1", 5s));
    auto bad = run_command(ctl + " health");
    CHECK(bad.exit_code == 1);
    CHECK_THAT(bad.output, Catch::StartsWith("unhealthy\n  - config: last reload failed"));
    CHECK(run_command(ctl + " status").exit_code == 1);
  }
  SECTION("unreachable (69), usage errors (64) and refused requests (3) are told apart") {
    auto un = run_command(instancectl_binary() + " --socket " + (dir / "none.sock").string() + " status 2>&1");
    CHECK(un.exit_code == 69);
    CHECK_THAT(un.output, Catch::Contains("cannot connect to") && Catch::Contains("is instanced running?"));
    CHECK(run_command(ctl + " frobnicate 2>/dev/null").exit_code == 64);
    CHECK(run_command(ctl + " 2>/dev/null").exit_code == 64);
    CHECK(run_command(ctl + " --bogus status 2>/dev/null").exit_code == 64);
    CHECK(run_command(ctl + " job show 'bad id' 2>/dev/null").exit_code == 64);
    auto missing = run_command(ctl + " job show no-such-job 2>&1");
    CHECK(missing.exit_code == 3);
    CHECK_THAT(missing.output, Catch::Contains("(HTTP 404)"));
  }
}

TEST_CASE("only root and the operators' group are served", "[status][socket][auth]") {
  TempDir dir;
  SECTION("mode 0660: a stranger cannot even connect") {
    AgentProcess agent(dir, config("0660"));
    REQUIRE(agent.start_and_wait_ready());
    auto r = run_command(as_nobody(instancectl_binary() + " --socket " + agent.socket().string() + " status 2>&1"));
    CHECK(r.exit_code == 77);
    CHECK_THAT(r.output, Catch::Contains("permission denied"));
    auto member = run_command(as_nobody(instancectl_binary() + " --socket " + agent.socket().string() + " health", "daemon"));
    CHECK(member.exit_code == 0);
  }
  SECTION("mode 0666: the peer-credential check still refuses a stranger with 403 and a log line") {
    AgentProcess agent(dir, config("0666"));
    REQUIRE(agent.start_and_wait_ready());
    auto curl = "curl -s -w ' %{http_code}' --unix-socket " + agent.socket().string() + " http://localhost/v1/status";
    auto r = run_command(as_nobody(curl));
    CHECK_THAT(r.output, Catch::EndsWith(" 403") && Catch::Contains("only root and members of group 'daemon'"));
    CHECK_THAT(agent.log(), Catch::Contains("refused GET /v1/status from pid") && Catch::Contains("uid 65534"));
    auto member = run_command(as_nobody(curl, "daemon"));
    CHECK_THAT(member.output, Catch::EndsWith(" 200"));
    auto ctl = run_command(as_nobody(instancectl_binary() + " --socket " + agent.socket().string() + " status 2>&1"));
    CHECK(ctl.exit_code == 77);
    CHECK_THAT(ctl.output, Catch::Contains("permission denied"));
  }
}

TEST_CASE("bad clients are cut off without affecting others", "[status][socket][abuse]") {
  TempDir dir;
  AgentProcess agent(dir, config("0660", 64));
  REQUIRE(agent.start_and_wait_ready());

  SECTION("garbage gets 400 and a closed connection") {
    int fd = connect_unix(agent.socket());
    REQUIRE(fd >= 0);
    send_all(fd, std::string("\x00\xff\x13 garbage garbage\r\n\r\n", 22));
    auto reply = read_until_close(fd, 5s);
    ::close(fd);
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 400 Bad Request"));
  }
  SECTION("an oversized header gets 431") {
    int fd = connect_unix(agent.socket());
    send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(20000, 'a') + "\r\n\r\n");
    auto reply = read_until_close(fd, 5s);
    ::close(fd);
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 431"));
  }
  SECTION("an oversized body gets 413") {
    int fd = connect_unix(agent.socket());
    send_all(fd, "POST /v1/health HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
    auto reply = read_until_close(fd, 5s);
    ::close(fd);
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 413"));
  }
  SECTION("slowloris clients are cut at request_timeout while others are served") {
    std::vector<int> slow;
    for (int i = 0; i < 10; ++i) {
      int fd = connect_unix(agent.socket());
      REQUIRE(fd >= 0);
      send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\n");
      slow.push_back(fd);
    }
    CHECK(agent.curl("http://localhost/v1/health").exit_code == 0);
    // Trickle one byte every 300 ms: the 2 s request_timeout still cuts them.
    auto start = std::chrono::steady_clock::now();
    std::vector<bool> closed(slow.size(), false);
    while (std::chrono::steady_clock::now() - start < 6s) {
      bool all = true;
      for (std::size_t i = 0; i < slow.size(); ++i) {
        if (closed[i]) continue;
        send_all(slow[i], "X");
        pollfd p{slow[i], POLLIN, 0};
        char c;
        if (::poll(&p, 1, 0) > 0 && ::recv(slow[i], &c, 1, 0) == 0) closed[i] = true;
        all = all && closed[i];
      }
      if (all) break;
      std::this_thread::sleep_for(300ms);
    }
    for (std::size_t i = 0; i < slow.size(); ++i) {
      CHECK(closed[i]);
      ::close(slow[i]);
    }
    CHECK_THAT(agent.curl("http://localhost/metrics").output, Catch::Contains("instanced_status_timeouts_total 10"));
  }
  SECTION("a client that connects and says nothing is closed too") {
    int fd = connect_unix(agent.socket());
    auto reply = read_until_close(fd, 6s);
    ::close(fd);
    CHECK(reply.empty());
  }
  CHECK(agent.running());
  CHECK(agent.curl("http://localhost/v1/health").exit_code == 0);
}

TEST_CASE("500 parallel connections are all answered", "[status][socket][load]") {
  TempDir dir;
  // Fewer slots than clients: the rest queue (one process here, so its own cap is lifted).
  AgentProcess agent(dir, config("0660", 64) + "  max_connections_per_process: 1000\n");
  REQUIRE(agent.start_and_wait_ready());
  // Healthy first: right after READY a subsystem may still be on its first check (the
  // disk guardian's first statvfs), and /v1/health says 503 "starting" until then.
  CHECK(eventually([&] { return agent.curl("-f http://localhost/v1/health").exit_code == 0; }, 10s));
  std::vector<int> fds;
  for (int i = 0; i < 500; ++i) {
    int fd = connect_unix(agent.socket());
    REQUIRE(fd >= 0);
    fds.push_back(fd);
    send_all(fd, "GET /v1/health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  }
  int ok = 0;
  for (int fd : fds) {
    auto reply = read_until_close(fd, 10s);
    ok += reply.starts_with("HTTP/1.1 200 OK");
    ::close(fd);
  }
  CHECK(ok == 500);
  CHECK(agent.running());
  auto metrics = agent.curl("http://localhost/metrics").output;
  CHECK_THAT(metrics, Catch::Contains("instanced_status_connections 1\n"));  // only this curl
}

TEST_CASE("a client holding 1,000 idle connections does not lock the operators out", "[status][socket][crowd]") {
  TempDir dir;
  // Idle connections are not cut for 30 s: the slots are only freed by the limits.
  AgentProcess agent(dir, "state_dir: {dir}/state\nstatus:\n  socket: {dir}/status.sock\n  group: daemon\n"
                          "  request_timeout: 30s\n");
  REQUIRE(agent.start_and_wait_ready());
  const std::string health = "timeout 10 " + instancectl_binary() + " --socket " + agent.socket().string() + " health";

  SECTION("one process: beyond its 16 connections it is answered 503 at once") {
    std::vector<int> fds;
    for (int i = 0; i < 1000; ++i) {
      int fd = connect_unix(agent.socket());
      if (fd >= 0) fds.push_back(fd);
    }
    CHECK(fds.size() == 1000);
    // The 17th is refused with the reason.
    auto reply = read_until_close(fds[16], 5s);
    CHECK_THAT(reply, Catch::StartsWith("HTTP/1.1 503") && Catch::Contains("too many connections from process") &&
                          Catch::Contains("max_connections_per_process is 16"));
    auto r = run_command(health);
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(agent.curl("http://localhost/metrics").output,
               Catch::Contains("instanced_status_refused_total{reason=\"per_process\"} 984"));
    for (int fd : fds) ::close(fd);
  }
  SECTION("300 processes, one idle connection each: a newcomer gets the slot of an idle one") {
    std::vector<pid_t> holders;
    int ready[2];
    REQUIRE(::pipe(ready) == 0);
    for (int i = 0; i < 300; ++i) {
      pid_t pid = ::fork();
      REQUIRE(pid >= 0);
      if (pid == 0) {
        ::close(ready[0]);
        int fd = connect_unix(agent.socket());
        char ok = fd >= 0 ? 'y' : 'n';
        (void)::write(ready[1], &ok, 1);
        ::pause();  // holds the connection until killed
        ::_exit(0);
      }
      holders.push_back(pid);
    }
    ::close(ready[1]);
    int connected = 0;
    for (int i = 0; i < 300; ++i) {
      char c;
      if (::read(ready[0], &c, 1) == 1 && c == 'y') ++connected;
    }
    ::close(ready[0]);
    CHECK(connected == 300);  // 256 served, the rest in the listen backlog
    // All slots idle for a second: instancectl takes the slot of one of them.
    auto r = run_command(health);
    INFO(r.output);
    CHECK(r.exit_code == 0);
    CHECK_THAT(agent.curl("http://localhost/metrics").output, Catch::Contains("instanced_status_evicted_total"));
    for (pid_t pid : holders) ::kill(pid, SIGKILL);
    for (pid_t pid : holders) ::waitpid(pid, nullptr, 0);
  }
  CHECK(agent.running());
}

TEST_CASE("status.textfile_dir: /metrics written for node exporter's textfile collector, atomically, again and again",
          "[status][textfile]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "textfile");
  AgentProcess agent(dir, config() + "  textfile_dir: {dir}/textfile\n  textfile_interval: 1s\n");
  REQUIRE(agent.start_and_wait_ready());
  const auto file = dir / "textfile/instanced.prom";
  REQUIRE(eventually([&] { return std::filesystem::exists(file); }));
  struct stat first {};
  REQUIRE(::stat(file.c_str(), &first) == 0);
  CHECK((first.st_mode & 07777) == 0644);  // node exporter reads it as its own user
  auto check = run_command("promtool check metrics < " + file.string() + " 2>&1");
  INFO(check.output);
  CHECK(check.exit_code == 0);
  CHECK_THAT(slurp(file), Catch::Contains("instanced_build_info{version=") && Catch::Contains("instanced_uptime_seconds "));
  // Written again: a new file renamed over the old one (node exporter never reads half of one).
  REQUIRE(eventually([&] {
    struct stat now {};
    return ::stat(file.c_str(), &now) == 0 && now.st_ino != first.st_ino;
  }));
  std::vector<std::string> names;
  for (const auto& e : std::filesystem::directory_iterator(dir / "textfile")) names.push_back(e.path().filename().string());
  CHECK(names == std::vector<std::string>{"instanced.prom"});  // no temporary file left behind

  SECTION("a folder that is not there: a warning naming it, the agent goes on, the file comes once it is made") {
    dir.write("instanced.yaml", expand(config() + "  textfile_dir: {dir}/nowhere\n  textfile_interval: 1s\n", dir));
    agent.signal(SIGHUP);
    REQUIRE(eventually([&] { return agent.log().find("status.textfile_dir: ") != std::string::npos &&
                                    agent.log().find((dir / "nowhere").string()) != std::string::npos; }));
    CHECK(agent.curl("http://localhost/v1/health").output == "{\"status\":\"healthy\",\"state\":\"ok\"}\n");
    std::filesystem::create_directories(dir / "nowhere");
    REQUIRE(eventually([&] { return std::filesystem::exists(dir / "nowhere/instanced.prom"); }));
    REQUIRE(eventually([&] { return agent.log().find("written again") != std::string::npos; }));
  }
}
