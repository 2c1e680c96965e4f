// The one proxy setting, end to end: the agent in a network namespace from which nothing
// is reachable but tinyproxy (with a user and password). The control plane and Azurite
// listen on an address of the host that no route inside leads to. Through the proxy the
// control channel connects, the blob container passes its pre-check and rclone mounts it,
// a diagnostics bundle is uploaded, and update_agent downloads its package over https
// (from a second development control plane serving files); without the setting each
// fails, saying why (the update then has no control channel to come from).
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/support/agent_process.hpp"
#include "tests/support/azurite.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/packages.hpp"
#include "tests/support/tinyproxy.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

// A network namespace with a veth pair to the host (10.213.N.1 outside, .2 inside) and
// nothing else; on the host, the loopback interface also holds 10.214.N.1, where the
// services listen: inside, that address is "Network is unreachable".
class ProxyOnlyNetwork {
 public:
  ProxyOnlyNetwork() {
    const unsigned n = std::random_device{}() % 250 + 1;
    const std::string tag = fmt::format("{:x}", (static_cast<unsigned>(::getpid()) << 8 | n) & 0xffffff);
    name_ = "instpx-" + tag;
    outside_ = "vpx" + tag;
    proxy_address = fmt::format("10.213.{}.1", n);
    service_address = fmt::format("10.214.{}.1", n);
    auto r = run_command(fmt::format(
        "set -e; ip netns add {0}; ip link add {1} type veth peer name in0 netns {0}; "
        "ip addr add {2}/24 dev {1}; ip link set {1} up; "
        "ip -n {0} addr add 10.213.{3}.2/24 dev in0; ip -n {0} link set in0 up; ip -n {0} link set lo up; "
        "ip addr add {4}/32 dev lo 2>&1",
        name_, outside_, proxy_address, n, service_address));
    INFO(r.output);
    if (r.exit_code != 0) remove();
    REQUIRE(r.exit_code == 0);
  }
  ~ProxyOnlyNetwork() { remove(); }
  // Put before the agent's command line: only its network namespace changes.
  std::vector<std::string> enter() const { return {"/usr/bin/nsenter", "--net=/run/netns/" + name_}; }
  std::string proxy_address;
  std::string service_address;

 private:
  void remove() const {
    // Deleting the namespace deletes the veth pair with it.
    run_command(fmt::format("{{ ip netns del {0}; ip link del {1}; ip addr del {2}/32 dev lo; }} 2>/dev/null", name_,
                            outside_, service_address));
  }
  std::string name_, outside_;
};

std::string write_secret(const TempDir& dir, const std::string& name, const std::string& value) {
  dir.write(name, value + "\n");
  ::chmod((dir / name).c_str(), 0600);
  return (dir / name).string();
}

std::string agent_config(const DevCp& cp, const Azurite& az, const std::string& net, const std::string& proxy,
                         const std::string& update_key) {
  return connected_agent_yaml(fmt::format("  endpoint: ws://{}:{}/v1/agent\n  insecure: true\n", net, cp.agent_port),
                              fmt::format(R"(diagnostics:
  upload_attempts: 1
update:
  public_keys: ['{2}']
  ca_file: {{dir}}/files/pki/ca.pem
  installer: {{dir}}/bin/installer
  keep_free: 1MiB
storage:
  probe_interval: 1s
  backoff_initial: 500ms
  backoff_max: 2s
  mount_timeout: 20s
  cache_dir: {{dir}}/cache
  mounts:
    - name: data
      type: blob
      account: {0}
      container: data
      endpoint: {1}
      key_file: {{dir}}/key
      driver: rclone
      mount_point: {{dir}}/mnt/data
{3})",
                                          kAccount, az.endpoint(), update_key, proxy));
}

json::value mount_of(const AgentProcess& agent) {
  auto v = json::parse(agent.curl("http://localhost/v1/mounts").output);
  return v.at("mounts").at(0);
}

}  // namespace

TEST_CASE("behind a proxy: control channel, blob pre-check, rclone mount, diagnostics upload and update download go "
          "through it",
          "[proxy][agent][blob]") {
  TempDir dir;
  ProxyOnlyNetwork net;
  DevCp cp(dir);
  cp.start(net.service_address + ":0");
  Azurite az(dir);
  az.host = net.service_address;
  az.start();
  REQUIRE(az.rclone("mkdir :azureblob:data").exit_code == 0);
  REQUIRE(az.rclone("mkdir :azureblob:diag").exit_code == 0);
  write_secret(dir, "key", kKey);
  const std::string password = "pr0xy-pass-6180339";
  write_secret(dir, "proxy-credentials", "agent:" + password);
  TinyProxy proxy(dir, {.listen = net.proxy_address, .allow = net.proxy_address + "/24", .connect_ports = "",
                        .basic_auth = "agent " + password});
  const std::string upload = az.endpoint() + "/diag/bundle.tar.gz?" + container_sas("diag", "rcw");
  // Packages over https from a second development control plane, on the unreachable address.
  TempDir files_dir;
  REQUIRE(run_command(std::string(TEST_SOURCE_DIR) + "/control/make-test-ca " + (dir / "files/pki").string() + " IP:" +
                      net.service_address).exit_code == 0);
  const std::string key = new_key(dir, "release");
  const Package package = make_package(dir, "instanced", "9.9.9");
  put_installer(dir);
  DevCp files(files_dir, {"--tls-cert", (dir / "files/pki/server.pem").string(), "--tls-key",
                          (dir / "files/pki/server.key").string(), "--files", (dir / "files").string()});
  files.start(net.service_address + ":0");
  const std::string update = fmt::format(
      R"({{"id":"update","name":"update_agent","args":{{"version":"9.9.9","url":"https://{}:{}/v1/files/{}","sha256":"{}","signature":"{}"}}}})",
      net.service_address, files.agent_port, package.name, package.sha256, sign(dir, "release", "9.9.9", package.sha256));

  SECTION("with proxy.url and its credentials") {
    AgentProcess agent(dir, agent_config(cp, az, net.service_address,
                                         fmt::format("proxy:\n  url: http://{}:{}\n  credentials_file: {{dir}}/proxy-credentials\n",
                                                     net.proxy_address, proxy.port),
                                         key));
    agent.wrapper = net.enter();
    REQUIRE(agent.start_and_wait_ready());
    INFO(agent.log() << proxy.output());
    REQUIRE(cp.wait([](const json::value& v) {
      return v.as_object().contains("ws-test") && v.at("ws-test").at("connected") == true;
    }, 30s));
    CHECK(proxy.output().find(fmt::format("CONNECT {}:{}", net.service_address, cp.agent_port)) != std::string::npos);
    // The pre-check (CONNECT) and rclone (an HTTP proxy from its environment) reach Azurite.
    REQUIRE(eventually([&] { return mount_of(agent).at("state") == "mounted"; }, 40s));
    dir.write("mnt/data/through-the-proxy.txt", "written through the mount\n");
    REQUIRE(eventually([&] {
      return az.rclone("cat :azureblob:data/through-the-proxy.txt").output == "written through the mount\n";
    }, 30s));
    cp.command("ws-test", fmt::format(R"({{"id":"diag","name":"collect_diagnostics","args":{{"upload_url":"{}"}}}})", upload));
    REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("diag"); }, 60s));
    auto r = cp.instances().at("ws-test").at("results").at("diag");
    INFO(json::serialize(r));
    CHECK(r.at("status") == "ok");
    // The bundle holds the driver's environment (its run folder): without the password.
    REQUIRE(az.rclone(fmt::format("copyto :azureblob:diag/bundle.tar.gz {}/down.tar.gz", dir.path().string())).exit_code == 0);
    std::filesystem::create_directories(dir / "y");
    REQUIRE(run_command(fmt::format("tar -xzf {0}/down.tar.gz -C {0}/y", dir.path().string())).exit_code == 0);
    CHECK(run_command(fmt::format("grep -rlF -- '{}' {}/y", password, dir.path().string())).output.empty());
    // The driver's log is there, its spec (its environment: keys, the proxy's URL) is not.
    auto listing = run_command(fmt::format("tar -tzf {}/down.tar.gz", dir.path().string())).output;
    CHECK(listing.find("./state/mounts/") != std::string::npos);
    CHECK(listing.find("spec.json") == std::string::npos);
    CHECK(agent.log().find(password) == std::string::npos);
    // The update's package, over https through the proxy, handed to the installer.
    cp.command("ws-test", update);
    REQUIRE(cp.wait([](const json::value& v) { return v.at("ws-test").at("results").as_object().contains("update"); }, 60s));
    auto u = cp.instances().at("ws-test").at("results").at("update");
    INFO(json::serialize(u));
    CHECK(u.at("status") == "ok");
    CHECK(proxy.output().find(fmt::format("CONNECT {}:{}", net.service_address, files.agent_port)) != std::string::npos);
    REQUIRE(eventually([&] { return std::filesystem::exists(dir / "installed.deb"); }));
    CHECK(slurp(dir / "installed.deb") == slurp(dir / ("files/" + package.name)));
    dir.write("installer-go", "");
  }

  SECTION("without it, each says why") {
    AgentProcess agent(dir, agent_config(cp, az, net.service_address, "", key));
    agent.wrapper = net.enter();
    REQUIRE(agent.start_and_wait_ready());
    INFO(agent.log());
    REQUIRE(eventually([&] {
      auto e = json::parse(agent.curl("http://localhost/v1/status").output).at("subsystems").at("control").at("details");
      return e.as_object().contains("last_error") &&
             std::string(e.at("last_error").as_string()).find("Network is unreachable") != std::string::npos;
    }, 20s));
    REQUIRE(eventually([&] {
      auto m = mount_of(agent);
      return m.as_object().contains("reason") && m.at("reason") == "unreachable" &&
             json::serialize(m).find("Network is unreachable") != std::string::npos;
    }, 20s));
    dir.write("upload-url", upload + "\n");
    auto ctl = run_command(fmt::format("INSTANCED_SOCKET={} {} diagnostics --upload-url-file {}/upload-url 2>&1",
                                       agent.socket().string(), instancectl_binary(), dir.path().string()));
    CHECK(ctl.exit_code == 2);
    CHECK(ctl.output.find("failed after 1 attempt: PUT " + az.endpoint() + "/diag/bundle.tar.gz: cannot connect to " +
                          net.service_address) != std::string::npos);
    CHECK(ctl.output.find("Network is unreachable") != std::string::npos);
    CHECK(proxy.output().find("CONNECT") == std::string::npos);
  }
}
