// Container jobs for real: podman (from Debian, with the runc runtime and explicit ulimits
// as this machine needs), its storage in the test's own folder, and an image imported from
// a root file system the test builds from busybox.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <signal.h>
#include <thread>

#include "agent/monitor/workload.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/unix_http.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

const char* kImage = "localhost/instanced-test:1";

// podman's configuration and storage under `dir`; the image imported there.
std::map<std::string, std::string> podman_env(const TempDir& dir) {
  REQUIRE(std::filesystem::exists("/usr/bin/podman"));  // scripts/install-deps installs it
  dir.write("containers.conf",
            "[containers]\ndefault_ulimits = [\"nofile=20000:20000\", \"nproc=1024:1024\"]\n[engine]\nruntime = \"runc\"\n");
  dir.write("storage.conf", fmt::format("[storage]\ndriver = \"vfs\"\ngraphroot = \"{0}/storage\"\nrunroot = \"{0}/run\"\n",
                                        dir.path().string()));
  std::map<std::string, std::string> env{{"CONTAINERS_CONF", (dir / "containers.conf").string()},
                                         {"CONTAINERS_STORAGE_CONF", (dir / "storage.conf").string()}};
  // A root file system of busybox and its applets.
  auto root = dir / "rootfs";
  std::filesystem::create_directories(root / "bin");
  std::filesystem::copy_file("/bin/busybox", root / "bin/busybox");
  for (const char* applet : {"sh", "echo", "sleep", "cat", "env", "pwd", "ls", "true", "false", "id"})
    std::filesystem::create_symlink("busybox", root / "bin" / applet);
  std::string prefix = fmt::format("CONTAINERS_CONF={} CONTAINERS_STORAGE_CONF={} ", env["CONTAINERS_CONF"], env["CONTAINERS_STORAGE_CONF"]);
  auto r = run_command(fmt::format("tar -C {0} -cf {1}/rootfs.tar . && {2} podman import -q {1}/rootfs.tar {3} 2>&1",
                                   root.string(), dir.path().string(), prefix, kImage));
  INFO(r.output);
  REQUIRE(r.exit_code == 0);
  return env;
}

std::string podman(const std::map<std::string, std::string>& env, const std::string& args) {
  return run_command(fmt::format("CONTAINERS_CONF={} CONTAINERS_STORAGE_CONF={} podman {} 2>&1", env.at("CONTAINERS_CONF"),
                                 env.at("CONTAINERS_STORAGE_CONF"), args))
      .output;
}

// Whether the container is gone: the agent removes it right after recording the job's
// end, so it may still be there for a moment after the state changed.
bool container_removed(const std::map<std::string, std::string>& env, const std::string& name) {
  return eventually([&] { return podman(env, "ps -a --format '{{.Names}}'").find(name) == std::string::npos; }, 30s);
}

const std::string kConfig = R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 5s
disk:
  paths: []
gpu:
  enabled: false
jobs:
  log_dir: {dir}/logs
  kill_grace: 1s
  runtime: podman
)";

json::value job_of(UnixHttp& http, const std::string& id) {
  auto r = http.get("/v1/jobs/job?id=" + id);
  REQUIRE(r.status == 200);
  return json::parse(r.body);
}

json::value wait_state(UnixHttp& http, const AgentProcess& agent, const std::string& id, const std::string& want,
                       std::chrono::milliseconds timeout = 30s) {
  json::value v;
  if (eventually([&] { return (v = job_of(http, id)).at("state") == json::value(want); }, timeout)) return v;
  FAIL("job " << id << " not " << want << ": " << json::serialize(v) << "\n" << agent.log());
  return v;
}

// Whether any process's command line holds `text`.
bool on_any_command_line(const std::string& text) {
  DIR* d = ::opendir("/proc");
  bool found = false;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] < '0' || e->d_name[0] > '9') continue;
    std::string cmd = slurp(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmd.find(text) != std::string::npos) found = true;
  }
  ::closedir(d);
  return found;
}

}  // namespace

TEST_CASE("a container job runs its image with the share as working folder, secrets off every command line", "[jobs][podman]") {
  TempDir dir;
  auto env = podman_env(dir);
  std::filesystem::create_directories(dir / "share");
  dir.write("share/data.txt", "dataset-line\n");
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready(10s, env));
  UnixHttp http(agent.socket());
  json::object job{{"id", "c1"},
                   {"image", kImage},
                   {"command", json::array{"sh", "-c", "echo token=$TOKEN job=$INSTANCED_JOB_ID; cat data.txt; echo written > result.txt; sleep 1; exit 3"}},
                   {"env", json::object{{"TOKEN", "s3cr3t-value-42"}}},
                   {"workdir", (dir / "share").string()}};
  auto r = http.post("/v1/jobs", json::serialize(job));
  REQUIRE(r.status == 202);
  wait_state(http, agent, "c1", "running");
  // Once the container has run its first line, podman's own processes have all started.
  REQUIRE(eventually([&] { return http.get("/v1/jobs/log?id=c1").body.starts_with("token="); }, 30s));
  CHECK_FALSE(on_any_command_line("s3cr3t-value-42"));
  auto v = wait_state(http, agent, "c1", "failed");
  CHECK(v.at("exit_code") == 3);
  CHECK(v.at("container") == "instanced-job-c1");
  auto log = http.get("/v1/jobs/log?id=c1").body;
  CHECK(log == "token=s3cr3t-value-42 job=c1\ndataset-line\n");
  CHECK(slurp(dir / "share/result.txt") == "written\n");  // through the bind mount of the share
  // The container is removed once its outcome is recorded; the variables' file too.
  CHECK(container_removed(env, "instanced-job-c1"));
  CHECK_FALSE(std::filesystem::exists(dir / "state/jobs/c1.env"));
  // Status output names the variable, never its value.
  CHECK(http.get("/v1/jobs").body.find("s3cr3t-value-42") == std::string::npos);
  CHECK(agent.log().find("s3cr3t-value-42") == std::string::npos);

  SECTION("a timeout stops the container") {
    json::object slow{{"id", "c2"}, {"image", kImage}, {"command", json::array{"sleep", "60"}}, {"timeout", 2}};
    REQUIRE(http.post("/v1/jobs", json::serialize(slow)).status == 202);
    auto t = wait_state(http, agent, "c2", "timed_out");
    CHECK_THAT(std::string(t.at("reason").as_string()), Catch::StartsWith("timed out after 2s"));
    CHECK(container_removed(env, "instanced-job-c2"));
  }
  SECTION("an image archive is loaded when the image is absent; without one the job fails saying so") {
    REQUIRE(podman(env, fmt::format("tag {} localhost/instanced-archived:1", kImage)).empty());
    podman(env, fmt::format("save -o {}/archived.tar localhost/instanced-archived:1", dir.path().string()));
    podman(env, "rmi localhost/instanced-archived:1");
    json::object missing{{"id", "c3"}, {"image", "localhost/instanced-archived:1"}, {"command", json::array{"true"}}};
    REQUIRE(http.post("/v1/jobs", json::serialize(missing)).status == 202);
    auto f = wait_state(http, agent, "c3", "failed");
    CHECK_THAT(std::string(f.at("reason").as_string()), Catch::Contains("is not present"));
    json::object archived{{"id", "c4"},
                          {"image", "localhost/instanced-archived:1"},
                          {"image_archive", (dir / "archived.tar").string()},
                          {"command", json::array{"echo", "loaded"}}};
    REQUIRE(http.post("/v1/jobs", json::serialize(archived)).status == 202);
    wait_state(http, agent, "c4", "succeeded");
    CHECK(http.get("/v1/jobs/log?id=c4").body == "loaded\n");
  }
}

TEST_CASE("a container job outlives an agent restart: taken back from its monitor, or re-attached without it",
          "[jobs][podman]") {
  TempDir dir;
  auto env = podman_env(dir);
  AgentProcess agent(dir, kConfig);
  REQUIRE(agent.start_and_wait_ready(10s, env));
  auto http = std::make_unique<UnixHttp>(agent.socket());
  json::object job{{"id", "r1"}, {"image", kImage}, {"command", json::array{"sh", "-c", "echo begin; sleep 8; echo end"}}};
  REQUIRE(http->post("/v1/jobs", json::serialize(job)).status == 202);
  wait_state(*http, agent, "r1", "running");
  REQUIRE(eventually([&] { return http->get("/v1/jobs/log?id=r1").body == "begin\n"; }, 30s));
  // The job sleeps 8 s: long enough to outlive the agent's restart on a loaded machine (one
  // restart took 7 s at niceness 10 beside a CI run), after which the log tells which way
  // the agent took it back.
  agent.signal(SIGKILL);
  agent.wait_exit(5s);
  const bool monitor_killed = GENERATE(false, true);
  if (monitor_killed) {
    // Its monitor gone without a record: the container still runs, and the runtime says so.
    auto info = instanced::monitor::MonitorInfo::parse(slurp(dir / "state/jobs/r1.run/monitor.json"));
    REQUIRE(info);
    REQUIRE(::kill(info->pid, SIGKILL) == 0);
  }
  REQUIRE(agent.start_and_wait_ready(10s, env));
  http = std::make_unique<UnixHttp>(agent.socket());
  CHECK(job_of(*http, "r1").at("state") == "running");
  auto v = wait_state(*http, agent, "r1", "succeeded");
  CHECK(v.at("exit_code") == 0);
  CHECK(http->get("/v1/jobs/log?id=r1").body == "begin\nend\n");
  CHECK_THAT(agent.log(), Catch::Contains(monitor_killed ? "is still running; re-attached" : "still running under its monitor"));
  CHECK(container_removed(env, "instanced-job-r1"));
}

TEST_CASE("the agent runs at most four container CLI commands at once, whatever the burst of starts", "[jobs][podman]") {
  TempDir dir;
  auto env = podman_env(dir);
  // podman itself, each of the agent's own commands (not a job's `run`, which its monitor
  // runs) made to last 0.5 s and counted while it runs.
  dir.write("podman-probe", fmt::format(R"(#!/bin/sh
[ "$1" = run ] && exec /usr/bin/podman "$@"
mkdir -p {0}/tools && : > {0}/tools/$$
ls {0}/tools | wc -l >> {0}/at-once
sleep 0.5
/usr/bin/podman "$@"
rc=$?
rm -f {0}/tools/$$
exit $rc
)",
                                       dir.path().string()));
  std::filesystem::permissions(dir / "podman-probe", std::filesystem::perms::owner_all);
  AgentProcess agent(dir, std::string(kConfig) + "  podman: " + (dir / "podman-probe").string() + "\n  slots: 10\n");
  REQUIRE(agent.start_and_wait_ready(10s, env));
  UnixHttp http(agent.socket());
  for (int i = 0; i < 10; ++i) {
    json::object job{{"id", fmt::format("b{}", i)}, {"image", kImage}, {"command", json::array{"true"}}};
    REQUIRE(http.post("/v1/jobs", json::serialize(job)).status == 202);
  }
  for (int i = 0; i < 10; ++i) wait_state(http, agent, fmt::format("b{}", i), "succeeded", 60s);
  std::istringstream counts(slurp(dir / "at-once"));
  int most = 0, seen = 0;
  for (int n = 0; counts >> n; ++seen) most = std::max(most, n);
  CHECK(seen >= 20);  // image exists and rm for each job's start (and rm after its end)
  CHECK(most == 4);   // the burst did fill the bound, and never went past it
}
