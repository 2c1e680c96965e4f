// The diagnostics bundle of the real agent: made through instancectl (a large journal from
// a stand-in journalctl: this machine runs no journald), and uploaded by collect_diagnostics
// to Azurite through a SAS URL, with the development control plane asking.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include "tests/support/agent_process.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/devcp.hpp"

using namespace instanced::testing;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

void put_program(const TempDir& dir, const std::string& name, const std::string& body) {
  fs::create_directories(dir / "bin");
  dir.write("bin/" + name, "#!/bin/sh\n" + body);
  ::chmod((dir / ("bin/" + name)).c_str(), 0755);
}

std::string write_secret(const TempDir& dir, const std::string& name, const std::string& value) {
  dir.write(name, value + "\n");
  ::chmod((dir / name).c_str(), 0600);
  return (dir / name).string();
}

std::map<std::string, std::string> path_with_bin(const TempDir& dir) {
  const char* path = std::getenv("PATH");
  return {{"PATH", (dir / "bin").string() + ":" + (path ? path : "/usr/bin:/bin")}};
}

// The files of an extracted bundle that hold `text`.
std::vector<std::string> holding(const fs::path& root, const std::string& text) {
  std::vector<std::string> found;
  for (const auto& e : fs::recursive_directory_iterator(root))
    if (e.is_regular_file() && slurp(e.path()).find(text) != std::string::npos)
      found.push_back(e.path().lexically_relative(root).string());
  return found;
}

std::string sig_of(const std::string& sas) { return sas.substr(sas.find("sig=") + 4); }

std::string percent_decoded(std::string s) {
  for (auto [from, to] : {std::pair{"%2B", "+"}, {"%2F", "/"}, {"%3D", "="}})
    for (auto p = s.find(from); p != std::string::npos; p = s.find(from)) s.replace(p, 3, to);
  return s;
}

const char* kBundleConfig = R"yaml(state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
control:
  token_file: {dir}/token
inventory:
  metadata_endpoint: ''
setup:
  log_dir: {dir}/logs/setup
  scripts:
    - name: leak
      when: start
      content: |
        echo "the token is $(cat {dir}/token)"
jobs:
  log_dir: {dir}/logs/jobs
storage:
  probe_interval: 1s
  backoff_initial: 1s
  backoff_max: 5s
  mounts:
    - name: data
      type: blob
      account: devstoreaccount1
      container: data
      endpoint: http://127.0.0.1:1/devstoreaccount1
      sas_file: {dir}/sas
      driver: rclone
      mount_point: {dir}/mnt/data
      required: false
diagnostics:
  max_bytes: 2MiB
)yaml";

}  // namespace

TEST_CASE("instancectl diagnostics: a bundle within its cap with a large journal, every part in it, no secret inside",
          "[diagnostics][agent]") {
  TempDir dir;
  const std::string token = "ctl-token-3141592653";
  write_secret(dir, "token", token);
  const std::string sas = container_sas("data", "rl");
  write_secret(dir, "sas", "?" + sas);
  // About 22 MiB of journal, the secrets in it (as a bug could log them), then its last line.
  put_program(dir, "journalctl", fmt::format(R"(echo "$@" > {0}/journalctl.args
awk 'BEGIN {{ for (i = 0; i < 300000; i++) printf "2026-12-07T00:00:00.000000+0000 vm instanced[1]: journal line %d\n", i }}'
echo "token in the journal: {1}"
echo "signature in the journal: {2} and {3}"
echo "journal end"
)",
                                             dir.path().string(), token, sig_of(sas), percent_decoded(sig_of(sas))));
  put_program(dir, "nvidia-smi", "echo '==============NVSMI LOG=============='; echo \"args: $*\"\n");
  AgentProcess agent(dir, kBundleConfig);
  REQUIRE(agent.start_and_wait_ready(10s, path_with_bin(dir)));
  REQUIRE(eventually([&] { return agent.curl("http://localhost/v1/setup").output.find("succeeded") != std::string::npos; }));

  // A job whose environment holds a user's key: the queue's journal keeps it; the bundle must not.
  const std::string user_key = "sk-user-key-2718281828";
  auto job = run_command(fmt::format("INSTANCED_SOCKET={} {} job submit --id keyed --env API_KEY={} -- /bin/sh -c "
                                     "'echo hello from the job'",
                                     agent.socket().string(), instancectl_binary(), user_key));
  REQUIRE(job.exit_code == 0);
  REQUIRE(eventually([&] {
    return agent.curl("http://localhost/v1/jobs/job?id=keyed").output.find("\"succeeded\"") != std::string::npos;
  }));
  REQUIRE(slurp(dir / "state/jobs/journal").find(user_key) != std::string::npos);

  // An operator (the socket's group, not root) may watch, not make or fetch: 403, exit 77.
  const std::string operator_ctl = fmt::format("setpriv --reuid=nobody --regid=nogroup --groups=0 {} --socket {}",
                                               instancectl_binary(), agent.socket().string());
  auto refused = run_command(operator_ctl + " diagnostics -o /tmp/never.tar.gz 2>&1");
  CHECK(refused.exit_code == 77);
  CHECK(refused.output.find("only root may make or fetch a diagnostics bundle") != std::string::npos);
  CHECK_FALSE(fs::exists("/tmp/never.tar.gz"));

  auto ctl = run_command(fmt::format("INSTANCED_SOCKET={} {} diagnostics -o {}/bundle.tar.gz 2>{}/progress",
                                     agent.socket().string(), instancectl_binary(), dir.path().string(),
                                     dir.path().string()));
  INFO(ctl.output << slurp(dir / "progress"));
  REQUIRE(ctl.exit_code == 0);
  CHECK(ctl.output.find("written to " + (dir / "bundle.tar.gz").string()) != std::string::npos);
  CHECK(slurp(dir / "progress").ends_with("ready\n"));
  struct stat st {};
  REQUIRE(::stat((dir / "bundle.tar.gz").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  CHECK(st.st_size <= 2 << 20);

  fs::create_directories(dir / "x");
  REQUIRE(run_command(fmt::format("tar -xzf {0}/bundle.tar.gz -C {0}/x", dir.path().string())).exit_code == 0);
  const fs::path x = dir / "x";
  for (const char* f : {"manifest.json", "journal.txt", "agent/status.json", "agent/config.yaml", "agent/mounts.json",
                        "agent/disk.json", "agent/metrics.txt", "system/mountinfo.txt", "system/inventory.json",
                        "system/kernel.log", "gpu/nvidia-smi-q.txt", "state/agent/run.json"})
    CHECK(fs::exists(x / f));
  CHECK(slurp(x / "gpu/nvidia-smi-q.txt").find("NVSMI LOG") != std::string::npos);
  CHECK(slurp(x / "agent/config.yaml").find("max_bytes: 2MiB") != std::string::npos);
  // The journal: its newest part, from a whole line, after a line saying what was left out.
  const std::string journal = slurp(x / "journal.txt");
  CHECK(journal.starts_with("[instanced: the "));
  CHECK(journal.ends_with("journal end\n"));
  CHECK(journal.find("token in the journal: ***\n") != std::string::npos);
  CHECK(journal.find("signature in the journal: *** and ***\n") != std::string::npos);
  CHECK(journal.size() > 1 << 20);  // the cap left to the journal is used
  const std::string args = slurp(dir / "journalctl.args");
  CHECK(args.find("--since=-86400s") != std::string::npos);
  CHECK(args.find("--unit=") != std::string::npos);
  // The setup script's log, with the token it printed replaced.
  auto setup_logs = holding(x / "logs/setup/leak", "the token is ***");
  CHECK(setup_logs.size() == 1);
  CHECK(slurp(x / "logs/jobs/keyed.log").find("hello from the job") != std::string::npos);
  CHECK(!fs::exists(x / "state/jobs/journal"));
  // No secret anywhere, in any spelling.
  for (const auto& secret : {token, sas, sig_of(sas), percent_decoded(sig_of(sas)), user_key}) {
    INFO(secret);
    CHECK(holding(x, secret).empty());
  }
  auto watched = run_command(operator_ctl + " --json status");
  CHECK(watched.exit_code <= 1);  // answered (healthy or degraded), not refused
  auto state = json::parse(agent.curl("http://localhost/v1/diagnostics").output);
  CHECK(state.at("state") == "ready");
  CHECK(state.at("redacted").as_int64() >= 4);
  CHECK(state.at("available") == true);
}

TEST_CASE("collect_diagnostics: uploaded to Azurite through a SAS URL, retried while the service is down, and a "
          "refused signature reported at once",
          "[diagnostics][agent][blob]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  Azurite az(dir);
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:diag").exit_code == 0);
  AgentProcess agent(dir, connected_agent_yaml(fmt::format("  endpoint: ws://127.0.0.1:{}/v1/agent\n  insecure: true\n", cp.agent_port),
                                               R"(diagnostics:
  upload_backoff: 200ms
  upload_attempts: 20
)"));
  REQUIRE(agent.start_and_wait_ready());
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("ws-test") && v.at("ws-test").at("connected") == true; }));
  auto result_of = [&](const std::string& id) {
    REQUIRE(cp.wait([&](const json::value& v) { return v.at("ws-test").at("results").as_object().contains(id); }, 60s));
    return cp.instances().at("ws-test").at("results").at(id);
  };
  auto collect = [&](const std::string& id, const std::string& url) {
    cp.command("ws-test", fmt::format(R"({{"id":"{}","name":"collect_diagnostics","args":{{"upload_url":"{}"}}}})", id, url));
  };
  const std::string blob = az.endpoint() + "/diag/bundle.tar.gz";

  SECTION("arguments that are not a URL are refused, without repeating them") {
    cp.command("ws-test", R"({"id":"none","name":"collect_diagnostics","args":{}})");
    CHECK(result_of("none").at("status") == "invalid");
    collect("ftp", "ftp://host/x?sig=do-not-echo-me");
    auto r = result_of("ftp");
    CHECK(r.at("status") == "invalid");
    CHECK(json::serialize(r).find("do-not-echo-me") == std::string::npos);
  }

  SECTION("a signature the service refuses: failed after one attempt, the URL shown without its SAS") {
    const std::string bad = container_sas("diag", "rcw", "AAAA" + kKey.substr(4));
    collect("bad", blob + "?" + bad);
    auto r = result_of("bad");
    INFO(json::serialize(r));
    CHECK(r.at("status") == "failed");
    const std::string error(r.at("error").as_string());
    CHECK(error.find("the Blob service answered 403") != std::string::npos);
    CHECK(error.find("after 1 attempt:") != std::string::npos);
    CHECK(error.find(blob) != std::string::npos);
    CHECK(json::serialize(r).find(sig_of(bad)) == std::string::npos);
    CHECK(agent.log().find(sig_of(bad)) == std::string::npos);
  }

  SECTION("the service down at first: retried until it is back, then the blob is the bundle") {
    az.stop();
    const std::string sas = container_sas("diag", "rcw");
    collect("up", blob + "?" + sas);
    REQUIRE(agent.wait_log("upload attempt 1 of 20 failed", 60s));
    az.start();  // the same port and data
    auto r = result_of("up");
    INFO(json::serialize(r));
    REQUIRE(r.at("status") == "ok");
    const auto& res = r.at("result");
    CHECK(res.at("state") == "uploaded");
    CHECK(res.at("upload").at("attempts").as_int64() >= 2);
    CHECK(res.at("upload").at("url").as_string() == blob);
    REQUIRE(az.rclone(fmt::format("copyto :azureblob:diag/bundle.tar.gz {}/down.tar.gz", dir.path().string())).exit_code == 0);
    CHECK(fs::file_size(dir / "down.tar.gz") == res.at("bytes").to_number<std::uint64_t>());
    auto sum = run_command(fmt::format("sha256sum {}/down.tar.gz", dir.path().string()));
    CHECK(sum.output.substr(0, 64) == std::string(res.at("sha256").as_string()));
    auto listing = run_command(fmt::format("tar -tzf {}/down.tar.gz", dir.path().string()));
    CHECK(listing.output.find("./manifest.json") != std::string::npos);
    CHECK(listing.output.find("./agent/status.json") != std::string::npos);
    fs::create_directories(dir / "y");
    REQUIRE(run_command(fmt::format("tar -xzf {0}/down.tar.gz -C {0}/y", dir.path().string())).exit_code == 0);
    CHECK(holding(dir / "y", sig_of(sas)).empty());
    CHECK(holding(dir / "y", "devcp-token-1").empty());
    CHECK(cp.wait([](const json::value& v) {
      for (const auto& e : v.at("ws-test").at("recent_events").as_array())
        if (e.at("type") == "diagnostics_ready") return true;
      return false;
    }));
  }
}
