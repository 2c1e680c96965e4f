// instancectl's shared parts: the exit statuses, the request over the status socket, the
// JSON helpers and the output style; each command group is a file of its own
// (status.cpp, setup.cpp, disk.cpp, mounts.cpp, gpu.cpp, jobs.cpp, workstation.cpp,
// diagnostics.cpp).
#pragma once

#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <boost/json.hpp>
#include <cstdlib>
#include <fmt/format.h>
#include <iostream>
#include <map>
#include <stdexcept>
#include <thread>
#include <string>
#include <unistd.h>
#include <vector>

namespace instanced::ctl {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

// Exit statuses (instancectl(1)).
constexpr int kHealthy = 0, kDegraded = 1, kFailed = 2, kRefused = 3;
constexpr int kUsage = 64, kUnreachable = 69, kNoPermission = 77;  // sysexits(3)'s EX_USAGE, EX_UNAVAILABLE, EX_NOPERM

// An error for people, with the exit status that tells scripts what kind it is.
struct Failure : std::runtime_error {
  Failure(int exit_code, const std::string& message) : std::runtime_error(message), code(exit_code) {}
  int code;
};
[[noreturn]] inline void usage_error(const std::string& message) { throw Failure(kUsage, message); }

struct Args {
  std::string socket = "/run/instanced/status.sock";
  bool json = false;
  bool follow = false;
  bool dry_run = false;
  std::string command;
  std::vector<std::string> operands;  // after the command: "setup logs NAME"
};

struct Reply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // the X-Instanced-* ones
};

// One request over the Unix socket; errors are thrown as a Failure: a message for people and the exit status.
Reply request(const std::string& socket, http::verb method, const std::string& target, const std::string& body = {});
// An error answer of the agent ({"error": …}) as a Failure: 77 for HTTP 403, else 3.
[[noreturn]] void agent_refused(const Reply& reply);
json::value parse_json(const std::string& body);
// A field as text ("" when missing; JSON for what is not a string).
std::string str(const json::value& v, std::string_view key);
std::string field_or_dash(const json::value& v, std::string_view key);
double num(const json::value& v, std::string_view key);
std::string human_duration(double seconds);
std::string human(double bytes);
std::string pad(const std::string& s, std::size_t width, std::size_t visible);
// Prints a log from `route`, and with --follow what is added until the run ends.
int follow_log(const Args& a, const std::string& route);

struct Style {
  bool colour = false;
  std::string state(const std::string& s) const {
    if (!colour) return s;
    const char* c = s == "ok" || s == "healthy" ? "32" : s == "failed" || s == "unhealthy" ? "31" : "33";
    return fmt::format("\033[{}m{}\033[0m", c, s);
  }
  std::string bold(const std::string& s) const { return colour ? "\033[1m" + s + "\033[0m" : s; }
};

// The commands, one group per file.
int cmd_status(const Args& a, const Style& st);
int cmd_control(const Args& a, const Style& st);
int cmd_health(const Args& a, const Style& st);
int cmd_version(const Args& a);
int cmd_setup(const Args& a, const Style& st);
int cmd_disk(const Args& a, const Style& st);
int cmd_reboot(const Args& a);
int cmd_mounts(const Args& a, const Style& st);
int cmd_gpu(const Args& a, const Style& st);
int cmd_jobs(const Args& a, const Style& st);
int cmd_job(const Args& a);
int cmd_apps(const Args& a, const Style& st);
int cmd_idle(const Args& a);
int cmd_ssh(const Args& a);
int cmd_diagnostics(const Args& a);
int cmd_update(const Args& a, const Style& st);

}  // namespace instanced::ctl
