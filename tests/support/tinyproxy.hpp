// tinyproxy (Debian's) as a test fixture, in the foreground with a configuration of its own:
// where it listens, whom it serves, where CONNECT may go, and a user it asks for.
#pragma once

#include <chrono>
#include <csignal>
#include <string>
#include <sys/wait.h>
#include <thread>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

struct TinyProxyOptions {
  std::string listen = "127.0.0.1";
  std::string allow = "127.0.0.1";
  std::string connect_ports;  // empty: CONNECT to any port
  std::string basic_auth;     // "user password": Proxy-Authorization required
};

struct TinyProxy {
  TinyProxy(const TempDir& dir, TinyProxyOptions o = {}) : port(free_port()) {
    std::string conf = "User nobody\nGroup nogroup\nPort " + std::to_string(port) + "\nListen " + o.listen +
                       "\nTimeout 60\nAllow " + o.allow + "\nLogLevel Connect\n";
    if (!o.connect_ports.empty()) conf += "ConnectPort " + o.connect_ports + "\n";
    if (!o.basic_auth.empty()) conf += "BasicAuth " + o.basic_auth + "\n";
    dir.write("tinyproxy.conf", conf);
    log = (dir / "tinyproxy.log").string();
    pid = spawn({"/usr/bin/tinyproxy", "-d", "-c", (dir / "tinyproxy.conf").string()}, log);
    eventually([&] {
      auto out = slurp(log);
      return out.find("listening on") != std::string::npos || out.find("Reloading config file finished") != std::string::npos;
    }, std::chrono::seconds(10));
  }
  ~TinyProxy() {
    ::kill(pid, SIGTERM);
    ::waitpid(pid, nullptr, 0);
  }
  std::string output() const { return slurp(log); }
  int port;
  pid_t pid = -1;
  std::string log;
};

}  // namespace instanced::testing
