// The development control plane (instanced-devcp) as a test fixture: started on loopback
// with ports of its own, its HTTP API read and driven with curl. Needs DEVCP_BIN.
#pragma once

#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <sys/wait.h>
#include <thread>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

namespace json = boost::json;

class DevCp {
 public:
  DevCp(const TempDir& dir, std::vector<std::string> extra = {}) : dir_(dir), extra_(std::move(extra)) {
    if (!std::filesystem::exists(dir / "token")) {
      dir.write("token", "devcp-token-1\n");
      std::filesystem::permissions(dir / "token", std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
    }
  }
  ~DevCp() { stop(); }

  void start(const std::string& listen = "127.0.0.1:0", const std::string& api = "127.0.0.1:0") {
    auto ports = dir_ / "ports";
    std::filesystem::remove(ports);
    std::vector<std::string> args{DEVCP_BIN, "--token-file", (dir_ / "token").string(), "--listen", listen,
                                  "--api", api, "--ports-file", ports.string(), "--quiet"};
    args.insert(args.end(), extra_.begin(), extra_.end());
    pid_ = spawn(args, (dir_ / "devcp.log").string());
    // It writes the ports file whole (renamed into place) once it listens.
    auto up_or_gone = [&] {
      if (std::filesystem::exists(ports)) return true;
      if (::waitpid(pid_, nullptr, WNOHANG) != pid_) return false;
      pid_ = -1;  // it exited: its log says why
      return true;
    };
    const bool listening = eventually(up_or_gone, 30s) && pid_ > 0;
    std::ifstream(ports) >> agent_port >> api_port;
    INFO("devcp.log: " << slurp(dir_ / "devcp.log"));
    REQUIRE(listening);
    REQUIRE(agent_port > 0);
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  json::value instances() const {
    auto r = run_command("curl -s --max-time 5 http://127.0.0.1:" + std::to_string(api_port) + "/v1/instances");
    return json::parse(r.output.empty() ? "{}" : r.output);
  }
  std::string command(const std::string& instance, const std::string& body) const {
    return run_command("curl -s --max-time 5 -X POST -d '" + body + "' http://127.0.0.1:" + std::to_string(api_port) +
                       "/v1/instances/" + instance + "/commands")
        .output;
  }
  // Polls instances() until `pred` holds, for up to `timeout`.
  template <class Pred>
  bool wait(Pred pred, std::chrono::milliseconds timeout = 10s) const {
    return eventually([&] { return pred(instances()); }, timeout);
  }
  int agent_port = 0;
  int api_port = 0;

 private:
  const TempDir& dir_;
  std::vector<std::string> extra_;
  pid_t pid_ = -1;
};

// The configuration of an agent named ws-test that talks to a development control plane
// (AgentProcess fills in {dir}): state and status socket in the test's folder, the token
// devcp wrote, quick reconnects, no metadata service. `control` is the endpoint and its TLS
// lines (each "  key: value\n"); `rest` the test's own sections.
inline std::string connected_agent_yaml(const std::string& control, const std::string& rest = "") {
  return "instance:\n  name: ws-test\nstate_dir: {dir}/state\nstatus:\n  socket: {dir}/status.sock\n  group: root\n"
         "control:\n" + control + "  token_file: {dir}/token\n  initial_delay_max: 0s\n"
         "  backoff_initial: 100ms\n  backoff_max: 400ms\ninventory:\n  metadata_endpoint: ''\n" + rest;
}

}  // namespace instanced::testing
