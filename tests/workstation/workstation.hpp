// What the workstation tests share: the systemctl stand-in copied into the test's folder
// (with units whose commands are real processes), a wall(1) stand-in that records its
// message, and the agent's configuration around them.
#pragma once

#include <boost/json.hpp>
#include <csignal>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fmt/format.h>
#include <fstream>
#include <thread>

#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/unix_http.hpp"

namespace instanced::testing {

namespace json = boost::json;

class Standins {
 public:
  explicit Standins(const TempDir& dir) : dir_(dir) {
    std::filesystem::create_directories(dir / "units");
    std::filesystem::copy_file(std::string(WORKSTATION_TEST_DIR) + "/systemctl-standin", dir / "systemctl");
    dir.write("wall", "#!/bin/sh\nprintf '%s\\n' \"$*\" >> \"$(dirname \"$0\")/wall.log\"\n");
    std::filesystem::permissions(dir / "wall", std::filesystem::perms::owner_all);
  }
  // Every unit still running is stopped with the test, also when it failed: each runs in a
  // session of its own (setsid), so its whole process group goes.
  ~Standins() {
    std::error_code ec;
    for (std::filesystem::directory_iterator it(dir_ / "units", ec), end; !ec && it != end; it.increment(ec)) {
      if (it->path().extension() != ".pid") continue;
      std::ifstream in(it->path());
      pid_t p = -1;
      if (in >> p && p > 1) {
        ::kill(-p, SIGKILL);
        ::kill(p, SIGKILL);
      }
    }
  }
  Standins(const Standins&) = delete;
  Standins& operator=(const Standins&) = delete;
  // A unit the stand-in knows: its command (run in the foreground), enabled or not.
  void unit(const std::string& name, const std::string& command, bool enabled) const {
    dir_.write("units/" + name + ".start", command);
    if (enabled) dir_.write("units/" + name + ".enabled", "");
  }
  // Runs the stand-in as a person would ("systemctl start x").
  int systemctl(const std::string& args) const {
    return run_command((dir_ / "systemctl").string() + " " + args + " >/dev/null 2>&1; echo $?").output == "0\n" ? 0 : 1;
  }
  std::string calls() const { return slurp(dir_ / "calls"); }
  std::size_t count(const std::string& call) const {
    std::istringstream in(calls());
    std::size_t n = 0;
    for (std::string line; std::getline(in, line);) n += line == call;
    return n;
  }
  pid_t pid(const std::string& unit) const {
    std::ifstream in(dir_ / "units" / (unit + ".pid"));
    pid_t p = -1;
    in >> p;
    return p;
  }
  std::string wall_log() const { return slurp(dir_ / "wall.log"); }
  // Waits (up to 10 s) until `call` was made `n` times; the count then.
  std::size_t wait_count(const std::string& call, std::size_t n) const {
    eventually([&] { return count(call) >= n; });  // the caller checks the count
    return count(call);
  }

 private:
  const TempDir& dir_;
};

// The agent's configuration for these tests: the stand-ins, nothing else of the host.
inline std::string workstation_config(const std::string& extra) {
  return R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 8s
disk:
  paths: []
gpu:
  enabled: false
jobs:
  log_dir: {dir}/logs
services:
  systemctl: {dir}/systemctl
  timeout: 5s
)" + extra;
}

inline std::string control_config(const DevCp& cp, const std::string& instance) {
  return fmt::format("control:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n  insecure: true\n  token_file: {{dir}}/token\n"
                     "  initial_delay_max: 0s\ninstance:\n  name: {}\n",
                     cp.agent_port, instance);
}

// Polls GET `target` until `pred` holds; the last answer.
template <class Pred>
json::value poll(UnixHttp& http, const std::string& target, Pred pred, std::chrono::milliseconds timeout = 15s) {
  auto until = std::chrono::steady_clock::now() + timeout;
  json::value v;
  while (std::chrono::steady_clock::now() < until) {
    auto r = http.get(target);
    if (r.status == 200) {
      v = json::parse(r.body);
      if (pred(v)) return v;
    }
    std::this_thread::sleep_for(50ms);
  }
  FAIL_CHECK("GET " << target << ": condition not met within the time; last answer " << json::serialize(v));
  return v;
}

// Polls what the control plane knows of `instance` until `pick` finds something in it;
// what it found (null if nothing within `timeout`).
template <class Pick>
json::value from_instance(const DevCp& cp, const std::string& instance, Pick pick,
                          std::chrono::milliseconds timeout = 15s) {
  json::value found;
  cp.wait(
      [&](const json::value& v) {
        auto* i = v.as_object().if_contains(instance);
        if (!i) return false;
        found = pick(i->as_object());
        return !found.is_null();
      },
      timeout);
  return found;
}

// The result of a command sent through the development control plane.
inline json::value command_result(const DevCp& cp, const std::string& instance, const std::string& id) {
  return from_instance(cp, instance, [&](const json::object& i) -> json::value {
    auto* results = i.if_contains("results");
    auto* r = results ? results->as_object().if_contains(id) : nullptr;
    return r ? *r : json::value();
  });
}

// An event of `type` among what the control plane received from `instance`.
inline json::value event_of(const DevCp& cp, const std::string& instance, const std::string& type) {
  return from_instance(cp, instance, [&](const json::object& i) -> json::value {
    if (auto* events = i.if_contains("recent_events"))
      for (const auto& e : events->as_array())
        if (e.at("type") == json::value(type)) return e;
    return nullptr;
  });
}

}  // namespace instanced::testing
