// Storage mounts in the real agent with real parts: Azurite (the Blob emulator, from npm)
// and rclone mounting it through FUSE; Samba serving SMB 3 on loopback; a FUSE file
// system that never answers (hungfs.cpp). This machine's kernel has no CIFS, so the
// mount.cifs invocation itself is checked with a recording mount.cifs put first on the
// agent's PATH; everything before it (port check, credentials file, smbclient pre-check
// against Samba) runs for real.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <fmt/format.h>
#include <fstream>
#include <netinet/in.h>
#include <sstream>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

#include "tests/support/agent_process.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/devcp.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

bool wait_until(const std::function<bool()>& pred, std::chrono::milliseconds timeout) { return eventually(pred, timeout); }

std::string write_secret(const TempDir& dir, const std::string& name, const std::string& value) {
  dir.write(name, value + "\n");
  ::chmod((dir / name).c_str(), 0600);
  return (dir / name).string();
}

// Every mount under the test's folder is gone before the agent is stopped, also when the
// test fails: leftover drivers are killed, FUSE connections aborted (a hung server cannot
// block the unmount, nor the agent's end).
class MountCleanup {
 public:
  explicit MountCleanup(const TempDir& dir) : dir_(dir.path().string()) {}
  ~MountCleanup() {
    run_command(fmt::format("pkill -KILL -f -- '{}/' 2>/dev/null", dir_));
    detach_mounts_under(dir_);  // TempDir does it again, for what was mounted after this
  }

 private:
  std::string dir_;
};

// smbd serving one share on a loopback port, with one user (the storage account name).
class Samba {
 public:
  Samba(const TempDir& dir, std::string user, std::string password) : user_(std::move(user)) {
    port = free_port();
    for (auto d : {"share", "priv", "lock", "state", "cache", "log"}) std::filesystem::create_directories(dir / "smb" / d);
    auto base = (dir / "smb").string();
    dir.write("smb/smb.conf", fmt::format(R"([global]
  interfaces = lo
  bind interfaces only = yes
  disable netbios = yes
  smb ports = {0}
  server role = standalone server
  server min protocol = SMB3
  private dir = {1}/priv
  lock directory = {1}/lock
  state directory = {1}/state
  cache directory = {1}/cache
  pid directory = {1}/lock
  ncalrpc dir = {1}/lock/ncalrpc
  log file = {1}/log/log.%m
  passdb backend = tdbsam:{1}/priv/passdb.tdb
[workspace]
  path = {1}/share
  read only = no
)",
                                           port, base));
    // Samba maps its users to Unix accounts.
    run_command(fmt::format("id {0} >/dev/null 2>&1 || useradd -M -s /usr/sbin/nologin {0}", user_));
    REQUIRE(run_command(fmt::format("printf '%s\\n%s\\n' '{1}' '{1}' | smbpasswd -c {0}/smb.conf -s -a {2} >/dev/null", base,
                                    password, user_))
                .exit_code == 0);
    pid_ = spawn({"/usr/sbin/smbd", "--foreground", "--no-process-group", "--debug-stdout", "-s", base + "/smb.conf"},
                 (dir / "smbd.log").string());
    REQUIRE(wait_until([&] { return run_command(fmt::format("bash -c 'echo > /dev/tcp/127.0.0.1/{}' 2>/dev/null", port)).exit_code == 0; },
                       20s));
  }
  ~Samba() {
    // Its helpers first, while smbd is there to reap them (else they stay as zombies).
    run_command(fmt::format("pkill -TERM -P {}", pid_));
    wait_until([&] { return run_command(fmt::format("pgrep -P {}", pid_)).output.empty(); }, 2s);
    ::kill(pid_, SIGTERM);
    ::waitpid(pid_, nullptr, 0);
  }
  int port = 0;

 private:
  std::string user_;
  pid_t pid_ = -1;
};

std::string agent_config(const std::string& storage) {
  return R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 10s
disk:
  paths: []
)" + storage;
}

json::value mounts_of(const AgentProcess& agent) {
  auto r = agent.curl("http://localhost/v1/mounts");
  REQUIRE(r.exit_code == 0);
  return json::parse(r.output);
}

json::value mount(const AgentProcess& agent, const std::string& name) {
  auto v = mounts_of(agent);
  for (const auto& m : v.at("mounts").as_array())
    if (m.at("name") == name.c_str()) return m;
  FAIL("no mount " << name << " in " << json::serialize(v));
  return {};
}

std::string state(const AgentProcess& agent, const std::string& name) {
  return std::string(mount(agent, name).at("state").as_string());
}

json::value wait_state(const AgentProcess& agent, const std::string& name, const std::string& want,
                       std::chrono::milliseconds timeout = 20s) {
  json::value last;
  wait_until([&] {
    last = mount(agent, name);
    return last.at("state") == want.c_str();
  }, timeout);
  INFO(json::serialize(last) << "\n" << agent.log());
  REQUIRE(last.at("state") == want.c_str());
  return last;
}

bool mounted(const std::filesystem::path& mp) {
  return slurp("/proc/self/mountinfo").find(" " + mp.string() + " ") != std::string::npos;
}

std::size_t threads_of(pid_t pid) {
  std::size_t n = 0;
  for (const auto& e : std::filesystem::directory_iterator(fmt::format("/proc/{}/task", pid))) {
    (void)e;
    ++n;
  }
  return n;
}

// User + system CPU seconds the process has used (/proc/PID/stat fields 14 and 15).
double cpu_seconds(pid_t pid) {
  std::string stat = slurp(fmt::format("/proc/{}/stat", pid));
  std::istringstream in(stat.substr(stat.rfind(')') + 2));
  std::string field;
  unsigned long long utime = 0, stime = 0;
  for (int i = 3; i <= 15 && in >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

std::vector<pid_t> pids_with(const std::string& needle) {
  std::vector<pid_t> out;
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    const std::string name = e.path().filename().string();
    char* end = nullptr;
    long pid = std::strtol(name.c_str(), &end, 10);
    if (*end || pid <= 0 || pid == ::getpid()) continue;
    std::string cmd = slurp(e.path() / "cmdline");
    if (cmd.find(needle) != std::string::npos) out.push_back(static_cast<pid_t>(pid));
  }
  return out;
}

std::string blob_storage(const Azurite& az, const std::string& extra = "",
                         const std::string& key_file = "{dir}/key") {
  return fmt::format(R"(storage:
  probe_interval: 1s
  probe_timeout: 2s
  slow_probe: 1500ms
  backoff_initial: 500ms
  backoff_max: 2s
  mount_timeout: 20s
  cache_dir: {{dir}}/cache
{}  mounts:
    - name: data
      type: blob
      account: {}
      container: data
      endpoint: {}
      key_file: {}
      driver: rclone
      mount_point: {{dir}}/mnt/data
      write_probe: true
      options: [dir-cache-time=1s]
)",
                     extra, kAccount, az.endpoint(), key_file);
}

// A shell script as dir/bin/mount.cifs (the kernel here has no CIFS: see the top).
void put_mount_cifs(const TempDir& dir, const std::string& body) {
  std::filesystem::create_directories(dir / "bin");
  dir.write("bin/mount.cifs", "#!/bin/sh\n" + body);
  ::chmod((dir / "bin/mount.cifs").c_str(), 0755);
}

// The agent's PATH with dir/bin first.
std::string path_with_bin(const TempDir& dir) {
  const char* path = std::getenv("PATH");
  return (dir / "bin").string() + ":" + (path ? path : "/usr/bin:/bin");
}

}  // namespace

TEST_CASE("a blob container through rclone: files cross between the mount and the Blob API, secrets stay out of sight",
          "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  AgentProcess agent(dir, agent_config(blob_storage(az, "  unmount_on_stop: true\n")));
  REQUIRE(agent.start_and_wait_ready());
  auto m = wait_state(agent, "data", "mounted");
  CHECK(m.at("driver") == "rclone");
  CHECK(m.at("source") == ":azureblob:data");
  CHECK(mounted(dir / "mnt/data"));
  CHECK(mounts_of(agent).at("ready") == true);

  // Mount -> Blob API (rclone writes back after its 5 s write-back delay).
  dir.write("mnt/data/from-mount.txt", "written through the mount\n");
  CHECK(wait_until([&] { return az.rclone("cat :azureblob:data/from-mount.txt").output == "written through the mount\n"; }, 20s));
  // Blob API -> mount (the directory cache is 1 s).
  dir.write("upload", "uploaded through the API\n");
  REQUIRE(az.rclone("rcat :azureblob:data/from-api.txt < " + (dir / "upload").string()).exit_code == 0);
  CHECK(wait_until([&] { return slurp(dir / "mnt/data/from-api.txt") == "uploaded through the API\n"; }, 10s));

  // The key is in no command line, log, status or event.
  for (pid_t pid : pids_with(dir.path().string())) CHECK(slurp(fmt::format("/proc/{}/cmdline", pid)).find(kKey) == std::string::npos);
  CHECK(slurp(fmt::format("/proc/{}/cmdline", agent.pid())).find(kKey) == std::string::npos);
  CHECK(agent.log().find(kKey) == std::string::npos);
  CHECK(agent.curl("http://localhost/v1/status").output.find(kKey) == std::string::npos);
  CHECK(agent.curl("http://localhost/v1/mounts").output.find(kKey) == std::string::npos);
  CHECK(agent.curl("http://localhost/v1/status").output.find(kKey) == std::string::npos);
  // Files the agent wrote under its state folder that hold secrets are 0600.
  for (const auto& e : std::filesystem::recursive_directory_iterator(dir / "state"))
    if (e.is_regular_file() && slurp(e.path()).find(kKey) != std::string::npos) {
      struct stat st{};
      ::stat(e.path().c_str(), &st);
      CHECK((st.st_mode & 077) == 0);
    }

  // With unmount_on_stop, stopping the agent flushes and unmounts; rclone ends with it.
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(15s) == 0);
  INFO(agent.log());  // says whether shutdown.timeout ran out first
  CHECK_FALSE(mounted(dir / "mnt/data"));
  CHECK(wait_until([&] { return pids_with((dir / "mnt/data").string()).empty(); }, 5s));
}

// The issue's test (docs/mounts.md): the driver runs under its monitor, so an agent stop or
// crash leaves the mount serving, a file written just before reaches the container, and
// the next start takes the driver back without mounting again.
TEST_CASE("an agent stop or crash leaves the blob mount serving, and the next start takes its driver back",
          "[mounts][blob][agent][monitor]") {
  const int sig = GENERATE(SIGTERM, SIGKILL);
  INFO("agent ended by signal " << sig);
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  const std::string config = agent_config(blob_storage(az));
  std::vector<pid_t> driver;
  {
    AgentProcess agent(dir, config);
    REQUIRE(agent.start_and_wait_ready());
    wait_state(agent, "data", "mounted");
    driver = pids_with((dir / "mnt/data").string());
    REQUIRE(driver.size() == 1);
    // In rclone's write-back cache (5 s) when the agent goes.
    dir.write("mnt/data/notebook.ipynb", "{\"cells\":[1]}\n");
    agent.signal(sig);
    REQUIRE(agent.wait_exit(15s));
    CHECK_THAT(agent.log(), !Catch::Contains("unmounted") && !Catch::Contains("did not stop"));
  }
  CHECK(mounted(dir / "mnt/data"));
  CHECK(pids_with((dir / "mnt/data").string()) == driver);
  CHECK(wait_until([&] { return az.rclone("cat :azureblob:data/notebook.ipynb").output == "{\"cells\":[1]}\n"; }, 20s));
  CHECK(slurp(dir / "mnt/data/notebook.ipynb") == "{\"cells\":[1]}\n");

  AgentProcess agent(dir, config);
  REQUIRE(agent.start_and_wait_ready());
  CHECK(agent.wait_log("data: its driver still runs under its monitor"));
  auto m = wait_state(agent, "data", "mounted");
  CHECK(m.at("remounts") == 0);
  CHECK(pids_with((dir / "mnt/data").string()) == driver);  // the same driver: never mounted again
  dir.write("mnt/data/after.txt", "after the restart\n");
  CHECK(wait_until([&] { return az.rclone("cat :azureblob:data/after.txt").output == "after the restart\n"; }, 20s));
  // Taken back means watched: the driver's end is seen and the mount made again.
  ::kill(driver[0], SIGKILL);
  REQUIRE(wait_until([&] { return mount(agent, "data").at("remounts").to_number<int>() >= 1; }, 10s));
  wait_state(agent, "data", "mounted", 20s);
}

TEST_CASE("rclone killed: the mount is reported stale and remounted within two probe intervals", "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  std::string storage = blob_storage(az);
  storage.replace(storage.find("probe_interval: 1s"), 18, "probe_interval: 2s");
  AgentProcess agent(dir, agent_config(storage));
  REQUIRE(agent.start_and_wait_ready());
  wait_state(agent, "data", "mounted");
  auto drivers = pids_with((dir / "mnt/data").string());
  REQUIRE(drivers.size() == 1);
  const auto killed = std::chrono::steady_clock::now();
  ::kill(drivers[0], SIGKILL);
  REQUIRE(wait_until([&] { return mount(agent, "data").at("remounts").to_number<int>() >= 1; }, 10s));
  auto m = wait_state(agent, "data", "mounted", 10s);
  const double took = std::chrono::duration<double>(std::chrono::steady_clock::now() - killed).count();
  // Within two probe intervals of 2 s (the driver's exit wakes the agent at once; a mount
  // that only went stale is found by the next probe), with 1 s for this test's polling.
  CHECK(took < 2 * 2.0 + 1.0);
  CHECK(agent.curl("http://localhost/v1/status").output.find("data: mounted -> stale") != std::string::npos);
  CHECK(agent.log().find("Transport endpoint is not connected") != std::string::npos);
  // Usable again.
  dir.write("mnt/data/after.txt", "x");
  CHECK(slurp(dir / "mnt/data/after.txt") == "x");
  auto now = pids_with((dir / "mnt/data").string());
  REQUIRE(now.size() == 1);
  CHECK(now[0] != drivers[0]);
}

TEST_CASE("Azurite stopped: the mount fails with the reason, and comes back with the service", "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  AgentProcess agent(dir, agent_config(blob_storage(az)));
  REQUIRE(agent.start_and_wait_ready());
  wait_state(agent, "data", "mounted");
  az.stop();
  auto m = wait_state(agent, "data", "failed", 30s);
  CHECK(m.at("reason") == "unreachable");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("Connection refused"));
  CHECK(mounts_of(agent).at("ready") == false);
  auto health = agent.curl("-s -o /dev/null -w '%{http_code}' http://localhost/v1/health");
  CHECK(health.output == "503");
  az.start();  // same port, same data
  wait_state(agent, "data", "mounted", 30s);
  CHECK(mounts_of(agent).at("ready") == true);
}

TEST_CASE("a wrong key is an auth failure and a missing container is not found, before any driver runs",
          "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "badkey", "d3Jvbmcta2V5LXdyb25nLWtleQ==");
  write_secret(dir, "key", kKey);
  std::string storage = blob_storage(az, "", "{dir}/badkey") + fmt::format(R"(    - name: other
      type: blob
      account: {}
      container: nothere
      endpoint: {}
      key_file: {{dir}}/key
      driver: rclone
      required: false
      mount_point: {{dir}}/mnt/other
)",
                                                                                      kAccount, az.endpoint());
  AgentProcess agent(dir, agent_config(storage));
  REQUIRE(agent.start_and_wait_ready());
  auto m = wait_state(agent, "data", "failed");
  CHECK(m.at("reason") == "auth_failed");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("403"));
  m = wait_state(agent, "other", "failed");
  CHECK(m.at("reason") == "not_found");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("ContainerNotFound"));
  CHECK(pids_with((dir / "mnt").string()).empty());  // no driver was started
  CHECK(agent.log().find("d3Jvbmcta2V5") == std::string::npos);
  // A required mount that fails: the agent says so in its health.
  auto status = json::parse(agent.curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("mounts").at("state") == "failed");
}

TEST_CASE("a key file others can read is refused, naming the file and the fix", "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.port = 1;  // never contacted
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  ::chmod((dir / "key").c_str(), 0644);
  AgentProcess agent(dir, agent_config(blob_storage(az)));
  REQUIRE(agent.start_and_wait_ready());
  auto m = wait_state(agent, "data", "failed");
  CHECK_THAT(std::string(m.at("error").as_string()),
             Catch::Contains("mount 'data': key_file " + (dir / "key").string() + ": mode 0644 lets others read it; chmod 600 it"));
}

TEST_CASE("prepare_stop flushes and unmounts the mounts and keeps them down for the stop", "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  DevCp cp(dir);
  cp.start();
  AgentProcess agent(dir, agent_config(blob_storage(az) +
                                       fmt::format("instance:\n  name: mounts-test\ncontrol:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n"
                                                   "  insecure: true\n  token_file: {{dir}}/token\n  initial_delay_max: 0s\n",
                                                   cp.agent_port)));
  REQUIRE(agent.start_and_wait_ready());
  wait_state(agent, "data", "mounted");
  dir.write("mnt/data/notebook.ipynb", "{\"cells\":[]}\n");
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("mounts-test"); }));
  cp.command("mounts-test", R"({"id":"stop-1","name":"prepare_stop"})");
  REQUIRE(cp.wait([](const json::value& v) { return v.at("mounts-test").at("results").as_object().contains("stop-1"); }, 30s));
  auto r = cp.instances().at("mounts-test").at("results").at("stop-1");
  INFO(json::serialize(r));
  CHECK(r.at("status") == "ok");
  CHECK(r.at("result").at("drained").at("mounts") == "data: flushed and unmounted");
  CHECK_FALSE(mounted(dir / "mnt/data"));
  // Flushed: the notebook is in the container, not only in rclone's cache.
  CHECK(az.rclone("cat :azureblob:data/notebook.ipynb").output == "{\"cells\":[]}\n");
  // Not remounted while the stop is under way (storage.drain_hold): checked round by round
  // under a simulated clock in mounts_sim_test.cpp.
  CHECK(state(agent, "data") == "drained");
  CHECK_FALSE(mounted(dir / "mnt/data"));
  // An operator's remount ends the hold.
  CHECK(agent.curl("-s -X POST 'http://localhost/v1/mounts/remount?name=data'").output.find("started") != std::string::npos);
  wait_state(agent, "data", "mounted");
}

TEST_CASE("a mount the agent did not make is left alone and reported", "[mounts][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.port = 1;
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  std::filesystem::create_directories(dir / "mnt/data");
  REQUIRE(::mount("tmpfs", (dir / "mnt/data").c_str(), "tmpfs", 0, "size=1m") == 0);
  AgentProcess agent(dir, agent_config(blob_storage(az)));
  REQUIRE(agent.start_and_wait_ready());
  auto m = wait_state(agent, "data", "failed");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("already has a tmpfs file system") &&
                                                         Catch::Contains("leaves it alone"));
  // Checked once per probe interval, not in a loop.
  const double cpu0 = cpu_seconds(agent.pid());
  std::this_thread::sleep_for(2s);
  CHECK(cpu_seconds(agent.pid()) - cpu0 < 0.5);
  agent.signal(SIGTERM);
  REQUIRE(agent.wait_exit(15s) == 0);
  CHECK(mounted(dir / "mnt/data"));  // not unmounted by the agent
}

TEST_CASE("required mounts hold the start scripts until they are mounted", "[mounts][blob][agent]") {
  TempDir dir;
  Azurite az(dir);
  // The container and its file are made first, on another port: made after the agent can
  // reach Azurite, the agent's next attempt could mount the container before the file is in
  // it, and rclone's directory cache would list it empty (a race of the test, seen under load).
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  dir.write("upload", "here\n");
  REQUIRE(az.rclone("rcat :azureblob:data/present.txt < " + (dir / "upload").string()).exit_code == 0);
  az.stop();  // its data stays in its folder
  az.port = free_port();  // the agent's endpoint: nothing listens there yet
  MountCleanup cleanup(dir);
  write_secret(dir, "key", kKey);
  AgentProcess agent(dir, agent_config(blob_storage(az) + R"(setup:
  log_dir: {dir}/logs
  scripts:
    - name: uses-data
      content: "ls {dir}/mnt/data > {dir}/listing"
)"));
  REQUIRE(agent.start_and_wait_ready());
  wait_state(agent, "data", "failed");
  auto setup = json::parse(agent.curl("http://localhost/v1/setup").output);
  CHECK(setup.at("phase") == "waiting for mounts");
  CHECK_FALSE(std::filesystem::exists(dir / "listing"));
  az.start();
  wait_state(agent, "data", "mounted", 30s);
  const bool listed = wait_until([&] { return slurp(dir / "listing") == "present.txt\n"; }, 20s);
  INFO("listing: '" << slurp(dir / "listing") << "'\n/v1/setup: " << agent.curl("http://localhost/v1/setup").output
                     << "\n/v1/mounts: " << agent.curl("http://localhost/v1/mounts").output << "\n"
                     << agent.log());
  REQUIRE(listed);
}

TEST_CASE("a hung mount: reported within the timeout, the agent keeps answering, threads do not pile up",
          "[mounts][hung][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  write_secret(dir, "key", kKey);
  DevCp cp(dir);
  cp.start();
  // hungfs takes rclone's place: the agent runs it as its blob driver.
  std::string storage = blob_storage(az, "  on_hung: report\n  rclone: " + std::string(HUNGFS_BIN) + "\n");
  AgentProcess agent(dir, agent_config(storage +
                                       fmt::format("instance:\n  name: hung-test\ncontrol:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n"
                                                   "  insecure: true\n  token_file: {{dir}}/token\n  initial_delay_max: 0s\n"
                                                   "  heartbeat_interval: 1s\n",
                                                   cp.agent_port)));
  // Declared after the agent, so it runs first: a process blocked in a FUSE request that
  // the server has read cannot even be killed until the connection is aborted.
  MountCleanup cleanup(dir);
  REQUIRE(agent.start_and_wait_ready());
  auto m = wait_state(agent, "data", "hung", 10s);
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("timed out after 2s") || Catch::Contains("still blocked"));
  CHECK(mounted(dir / "mnt/data"));
  const std::size_t threads_at_first_hang = threads_of(agent.pid());
  auto heartbeats = [&] { return cp.instances().at("hung-test").at("heartbeats").to_number<std::int64_t>(); };
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("hung-test"); }));
  const auto hb0 = heartbeats();
  const double cpu0 = cpu_seconds(agent.pid());

  // Six more probe intervals while the first probe stays blocked.
  for (int i = 0; i < 6; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    auto r = agent.curl("-s -o /dev/null -w '%{http_code}' http://localhost/v1/status");
    const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    CHECK(r.output == "200");
    CHECK(ms < 1000);
    std::this_thread::sleep_for(1s);
  }
  m = mount(agent, "data");
  CHECK(m.at("state") == "hung");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("still blocked"));
  CHECK(m.at("blocked_threads") == 1);
  CHECK(threads_of(agent.pid()) <= threads_at_first_hang);
  CHECK(heartbeats() >= hb0 + 4);  // heartbeats every second went on
  // Waiting for the probe is not a busy loop: the agent idles (a spin would use ~6 s).
  CHECK(cpu_seconds(agent.pid()) - cpu0 < 1.0);
  CHECK(mounts_of(agent).at("ready") == false);
}

TEST_CASE("a hung mount with on_hung remount: the driver is replaced, threads stay bounded", "[mounts][hung][agent]") {
  TempDir dir;
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  write_secret(dir, "key", kKey);
  std::string storage = blob_storage(az, "  rclone: " + std::string(HUNGFS_BIN) + "\n");
  AgentProcess agent(dir, agent_config(storage));
  MountCleanup cleanup(dir);  // first, see above
  REQUIRE(agent.start_and_wait_ready());
  wait_state(agent, "data", "hung", 10s);
  const std::size_t baseline = threads_of(agent.pid());
  REQUIRE(wait_until([&] { return mount(agent, "data").at("remounts").to_number<int>() >= 3; }, 30s));
  // Killing the FUSE server ends the requests blocked in it: nothing stays stuck.
  CHECK(threads_of(agent.pid()) <= baseline + 1);
  CHECK(mount(agent, "data").at("blocked_threads").to_number<int>() <= 1);
  CHECK(pids_with(std::string(HUNGFS_BIN)).size() <= 1);
}

// The suite's own guarantee: a test that ends while a hung mount is left in its folder (its
// agent remounted after the test's clean-up) does not block in the folder's removal, which
// would hang the test past ctest's kill. Checked in a child, so a regression fails here.
TEST_CASE("a test folder with a hung mount left inside is removed without blocking", "[mounts][hung]") {
  std::string folder;
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    int status = 1;
    {
      TempDir dir;
      std::filesystem::create_directories(dir / "mnt/data");
      std::ofstream(dir.path().parent_path() / fmt::format("hung-folder-{}", ::getpid())) << dir.path().string();
      spawn({HUNGFS_BIN, "mount", ":azureblob:data", (dir / "mnt/data").string()}, (dir / "hungfs.log").string());
      if (wait_until([&] { return mounted(dir / "mnt/data"); }, 10s)) status = 0;
    }
    ::_exit(status);
  }
  const auto named = std::filesystem::temp_directory_path() / fmt::format("hung-folder-{}", child);
  int status = -1;
  const bool ended = wait_until([&] { return ::waitpid(child, &status, WNOHANG) == child; }, 30s);
  folder = slurp(named);
  std::filesystem::remove(named);
  if (!ended && !folder.empty()) {  // blocked: undo it here, then fail
    detach_mounts_under(folder);
    ::waitpid(child, &status, 0);
    for (pid_t p : pids_with(folder + "/")) ::kill(p, SIGKILL);
  }
  REQUIRE(ended);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);  // it was mounted
  REQUIRE_FALSE(folder.empty());
  CHECK_FALSE(std::filesystem::exists(folder));
  CHECK(pids_with(folder + "/").empty());
}

TEST_CASE("SMB: the credentials file works with smbclient against Samba, mount.cifs gets no secret on argv",
          "[mounts][smb][agent]") {
  TempDir dir;
  const std::string account = "wsacct01", key = "SmbKey/With+Base64=";
  Samba smb(dir, account, key);
  MountCleanup cleanup(dir);
  write_secret(dir, "key", key);
  // The recording mount.cifs: what it was given, then the error this kernel gives (no CIFS).
  put_mount_cifs(dir, "printf '%s\\n' \"$@\" > " + (dir / "mount.cifs.args").string() +
                          "\ncred=$(printf '%s' \"$4\" | sed -n 's/.*credentials=\\([^,]*\\).*/\\1/p')\n"
                          "stat -c %a \"$cred\" > " + (dir / "cred.mode").string() +
                          "\necho 'mount error(19): No such device' >&2\nexit 32\n");
  std::string storage = fmt::format(R"(storage:
  probe_interval: 1s
  backoff_initial: 10s
  mounts:
    - name: users
      type: azure-files
      account: {}
      share: workspace
      endpoint: 127.0.0.1:{}
      key_file: {{dir}}/key
      mount_point: {{dir}}/mnt/users
      uid: 1000
      gid: 1000
)",
                                    account, smb.port);
  AgentProcess agent(dir, agent_config(storage));
  REQUIRE(agent.start_and_wait_ready(10s, {{"PATH", path_with_bin(dir)}}));
  auto m = wait_state(agent, "users", "failed");
  CHECK(m.at("reason") == "no_kernel_support");
  CHECK(m.at("source") == "//127.0.0.1/workspace");

  auto args = slurp(dir / "mount.cifs.args");
  const auto cred = (dir / "state/mounts/users.cred").string();
  CHECK(args == fmt::format("//127.0.0.1/workspace\n{}\n-o\ncredentials={},vers=3.1.1,serverino,nosharesock,actimeo=30,"
                            "mfsymlinks,uid=1000,gid=1000,dir_mode=0755,file_mode=0644,port={}\n",
                            (dir / "mnt/users").string(), cred, smb.port));
  CHECK(args.find(key) == std::string::npos);
  CHECK(slurp(dir / "cred.mode") == "600\n");
  // The file the agent wrote is what smbclient -A reads: it logs in to Samba with it.
  auto login = run_command(fmt::format("smbclient //127.0.0.1/workspace -A {} -p {} -m SMB3 -c 'ls' 2>&1", cred, smb.port));
  INFO(login.output);
  CHECK(login.exit_code == 0);
  CHECK(agent.log().find(key) == std::string::npos);
  CHECK(agent.curl("http://localhost/v1/mounts").output.find(key) == std::string::npos);
}

TEST_CASE("SMB: a wrong password is an auth failure, a closed port is port_blocked, an unknown share not_found",
          "[mounts][smb][agent]") {
  TempDir dir;
  const std::string account = "wsacct01";
  Samba smb(dir, account, "TheRightKey==");
  MountCleanup cleanup(dir);
  write_secret(dir, "wrong", "NotTheKey==");
  write_secret(dir, "right", "TheRightKey==");
  put_mount_cifs(dir, "touch " + (dir / "mount.cifs.called").string() + "\nexit 32\n");
  const int closed = free_port();
  std::string storage = fmt::format(R"(storage:
  probe_interval: 1s
  connect_timeout: 1s
  backoff_initial: 10s
  mounts:
    - name: wrongkey
      type: azure-files
      account: {0}
      share: workspace
      endpoint: 127.0.0.1:{1}
      key_file: {{dir}}/wrong
      mount_point: {{dir}}/mnt/a
    - name: closed
      type: azure-files
      account: {0}
      share: workspace
      endpoint: 127.0.0.1:{2}
      key_file: {{dir}}/right
      mount_point: {{dir}}/mnt/b
    - name: noshare
      type: azure-files
      account: {0}
      share: nosuchshare
      endpoint: 127.0.0.1:{1}
      key_file: {{dir}}/right
      mount_point: {{dir}}/mnt/c
)",
                                    account, smb.port, closed);
  AgentProcess agent(dir, agent_config(storage));
  REQUIRE(agent.start_and_wait_ready(10s, {{"PATH", path_with_bin(dir)}}));
  auto m = wait_state(agent, "wrongkey", "failed");
  CHECK(m.at("reason") == "auth_failed");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("NT_STATUS_LOGON_FAILURE"));
  m = wait_state(agent, "closed", "failed");
  CHECK(m.at("reason") == "port_blocked");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains(fmt::format("port {} blocked or unreachable", closed)));
  m = wait_state(agent, "noshare", "failed");
  CHECK(m.at("reason") == "not_found");
  CHECK_THAT(std::string(m.at("error").as_string()), Catch::Contains("NT_STATUS_BAD_NETWORK_NAME"));
  CHECK_FALSE(std::filesystem::exists(dir / "mount.cifs.called"));  // the pre-checks stopped each one
  CHECK(agent.log().find("NotTheKey") == std::string::npos);
}
