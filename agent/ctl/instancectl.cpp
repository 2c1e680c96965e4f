// instancectl: the operator's client of the status socket.
// Exit status (instancectl(1)): 0 healthy, 1 degraded (or what was asked about is not ok),
// 2 failed, 3 the agent refused the request, 64 usage error, 69 the agent is unreachable,
// 77 permission denied.
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

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;

namespace {

constexpr int kHealthy = 0, kDegraded = 1, kFailed = 2, kRefused = 3;
constexpr int kUsage = 64, kUnreachable = 69, kNoPermission = 77;  // sysexits(3)'s EX_USAGE, EX_UNAVAILABLE, EX_NOPERM

// An error for people, with the exit status that tells scripts what kind it is.
struct Failure : std::runtime_error {
  Failure(int exit_code, const std::string& message) : std::runtime_error(message), code(exit_code) {}
  int code;
};
[[noreturn]] void usage_error(const std::string& message) { throw Failure(kUsage, message); }

struct Args {
  std::string socket = "/run/instanced/status.sock";
  bool json = false;
  bool follow = false;
  bool dry_run = false;
  std::string command;
  std::vector<std::string> operands;  // after the command: "setup logs NAME"
};

const char* kUsageText =
    "usage: instancectl [--socket PATH] [--json] COMMAND\n"
    "\n"
    "commands:\n"
    "  status    the agent's state and every subsystem's\n"
    "  health    healthy or the reasons it is not\n"
    "  version   the agent's version\n"
    "  control   the control channel: connection, outbox, last error\n"
    "  setup     setup scripts: state, start, duration, exit status of each\n"
    "  setup logs NAME [--follow]   a script's output (of the running or last run)\n"
    "  setup rerun NAME             run a script again (after a failure, or on purpose)\n"
    "  disk      watched paths (size, used, free, inodes, state) and what fills the disk\n"
    "  disk scan                    scan for the largest directories and files now\n"
    "  disk reclaim [--dry-run] [RULE...]   free space by the configured rules\n"
    "  reboot    reboot, unless the disk rule forbids it (free space first)\n"
    "  mounts    file share and blob mounts: state, probe latency, last error, remounts\n"
    "  mounts remount NAME          unmount (lazily) and mount again\n"
    "  gpu       GPUs: health and why, memory, utilisation, temperature, power, ECC, XIDs;\n"
    "            the driver and the CUDA stack\n"
    "  jobs      the job queue: running jobs, queued ones (position, what each waits for),\n"
    "            the last finished\n"
    "  job submit [--id ID] [--image IMAGE [--image-archive FILE]] [--gpus N|all]\n"
    "             [--timeout DURATION] [--workdir DIR] [--user USER] [--cpu-weight N]\n"
    "             [--env NAME=VALUE]... [--label KEY=VALUE]... -- COMMAND [ARG...]\n"
    "  job show ID                  one job: state, times, exit status, reason\n"
    "  job logs ID [--follow]       a job's output\n"
    "  job cancel ID                cancel a queued or running job\n"
    "  apps      the users' applications: up, degraded or down and why, probe latency,\n"
    "            restarts, Jupyter kernels and terminals\n"
    "  idle      idle or not and what is active; the schedule and the next stop\n"
    "  ssh       the SSH policy, the unit's state, drift undone\n"
    "\n"
    "  --socket PATH  status socket (default $INSTANCED_SOCKET or /run/instanced/status.sock)\n"
    "  --json         print the agent's JSON answer unchanged\n"
    "\n"
    "exit status: 0 healthy, 1 degraded, 2 unreachable or error\n";

struct Reply {
  unsigned status = 0;
  std::string body;
  std::map<std::string, std::string> headers;  // the X-Instanced-* ones
};

// One request over the Unix socket; errors are thrown as a Failure: a message for people and the exit status.
Reply request(const std::string& socket, http::verb method, const std::string& target, const std::string& body = {}) {
  asio::io_context ioc;
  beast::basic_stream<asio::local::stream_protocol> stream(ioc);
  stream.expires_after(std::chrono::seconds(10));
  boost::system::error_code ec;
  stream.socket().connect(asio::local::stream_protocol::endpoint(socket), ec);
  if (ec) {
    if (ec == asio::error::access_denied)
      throw Failure(kNoPermission, fmt::format("cannot connect to {}: permission denied (run as root or as a member of the operators' group)", socket));
    throw Failure(kUnreachable, fmt::format("cannot connect to {}: {} (is instanced running?)", socket, ec.message()));
  }
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "instanced");
  req.set(http::field::user_agent, "instancectl/" INSTANCED_VERSION);
  req.keep_alive(false);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  http::write(stream.socket(), req, ec);
  if (ec) throw Failure(kUnreachable, fmt::format("sending to {}: {}", socket, ec.message()));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 << 20);
  http::read(stream.socket(), buffer, parser, ec);
  if (ec) throw Failure(kUnreachable, fmt::format("reading from {}: {}", socket, ec.message()));
  Reply reply{parser.get().result_int(), parser.get().body(), {}};
  for (const auto& f : parser.get())
    if (f.name_string().starts_with("X-Instanced-")) reply.headers[std::string(f.name_string())] = std::string(f.value());
  return reply;
}

json::value parse_json(const std::string& body) {
  json::parse_options opt;
  opt.max_depth = 64;
  boost::system::error_code ec;
  auto v = json::parse(body, ec, {}, opt);
  if (ec) throw std::runtime_error("the agent's answer is not valid JSON: " + ec.message());
  return v;
}

std::string str(const json::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  auto* p = v.as_object().if_contains(key);
  if (!p) return {};
  if (p->is_string()) return std::string(p->as_string());
  return json::serialize(*p);
}

struct Style {
  bool colour = false;
  std::string state(const std::string& s) const {
    if (!colour) return s;
    const char* c = s == "ok" || s == "healthy" ? "32" : s == "failed" || s == "unhealthy" ? "31" : "33";
    return fmt::format("\033[{}m{}\033[0m", c, s);
  }
  std::string bold(const std::string& s) const { return colour ? "\033[1m" + s + "\033[0m" : s; }
};

std::string human_duration(double seconds) {
  auto s = static_cast<long long>(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{}h", s / 86400, (s % 86400) / 3600);
}

std::string pad(const std::string& s, std::size_t width, std::size_t visible) {
  return s + std::string(width > visible ? width - visible : 1, ' ');
}

int cmd_status(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/status");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  std::string state = str(v, "state");
  int rc = state == "ok" && str(v, "phase") == "running" ? kHealthy : state == "failed" ? kFailed : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  double uptime = v.as_object().contains("uptime_seconds") ? v.at("uptime_seconds").to_number<double>() : 0;
  std::cout << st.bold(fmt::format("instanced {} on {}", str(v, "version"), str(v, "instance"))) << ": "
            << st.state(state) << " (" << str(v, "phase") << "), up " << human_duration(uptime) << "\n";
  const auto& cfg = v.at("config");
  std::cout << "config: " << str(cfg, "file") << " (hash " << str(cfg, "hash").substr(0, 12) << ")";
  if (auto* r = cfg.as_object().if_contains("last_reload"); r && str(*r, "result") == "failed")
    std::cout << ", last reload " << st.state("failed") << " at " << str(*r, "at");
  std::cout << "\n\n";
  std::size_t w = 10;
  for (const auto& [name, s] : v.at("subsystems").as_object()) w = std::max(w, name.size() + 2);
  std::cout << pad("SUBSYSTEM", w, 9) << pad("STATE", 10, 5) << pad("SINCE", 26, 5) << "SUMMARY\n";
  for (const auto& [name, s] : v.at("subsystems").as_object()) {
    std::string sstate = str(s, "state");
    std::cout << pad(std::string(name), w, name.size()) << pad(st.state(sstate), 10, sstate.size())
              << pad(str(s, "since"), 26, str(s, "since").size()) << str(s, "summary") << "\n";
  }
  return rc;
}

// The control channel's section of /v1/status.
int cmd_control(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/status");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  auto* c = v.at("subsystems").as_object().if_contains("control");
  if (!c) throw Failure(kRefused, "this agent has no control channel");
  int rc = str(*c, "state") == "ok" ? kHealthy : kDegraded;
  if (a.json) {
    std::cout << json::serialize(*c) << "\n";
    return rc;
  }
  std::cout << "control: " << st.state(str(*c, "state")) << " - " << str(*c, "summary") << "\n";
  if (auto* d = c->as_object().if_contains("details"); d && d->is_object())
    for (const auto& [k, val] : d->as_object())
      std::cout << "  " << pad(std::string(k), 18, k.size()) << (val.is_string() ? std::string(val.as_string()) : json::serialize(val)) << "\n";
  return rc;
}

int cmd_health(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/health");
  if (reply.status == 403) throw Failure(kNoPermission, str(parse_json(reply.body), "error"));
  if (reply.status != 200 && reply.status != 503)
    throw Failure(kRefused, fmt::format("the agent answered HTTP {}", reply.status));
  auto v = parse_json(reply.body);
  int rc = reply.status == 200 ? kHealthy : str(v, "state") == "failed" ? kFailed : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << st.state(str(v, "status")) << "\n";
  if (auto* reasons = v.as_object().if_contains("reasons"); reasons && reasons->is_array())
    for (const auto& r : reasons->as_array()) std::cout << "  - " << (r.is_string() ? std::string(r.as_string()) : json::serialize(r)) << "\n";
  return rc;
}

// "a run of 3.2s", "-" for nothing.
std::string field_or_dash(const json::value& v, std::string_view key) {
  auto s = str(v, key);
  return s.empty() || s == "null" ? "-" : s;
}

// An error answer of the agent ({"error": …}) as an exception.
[[noreturn]] void agent_refused(const Reply& reply) {
  std::string msg = reply.body;
  try {
    msg = str(parse_json(reply.body), "error");
  } catch (...) {
  }
  throw Failure(reply.status == 403 ? kNoPermission : kRefused, fmt::format("{} (HTTP {})", msg, reply.status));
}

int cmd_setup_list(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/setup");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  std::string phase = str(v, "phase");
  int rc = phase == "done" ? kHealthy : kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << "setup: " << st.state(phase == "done" ? "ok" : phase) << " (" << str(v, "succeeded") << " of "
            << str(v, "total") << " succeeded)\n";
  if (auto* e = v.as_object().if_contains("error")) std::cout << "  " << st.state("failed") << ": " << json::value_to<std::string>(*e) << "\n";
  const auto& scripts = v.at("scripts").as_array();
  if (scripts.empty()) return rc;
  std::size_t w = 6;
  for (const auto& s : scripts) w = std::max(w, str(s, "name").size() + 2);
  std::cout << "\n" << pad("SCRIPT", w, 6) << pad("WHEN", 8, 4) << pad("STATE", 13, 5) << pad("STARTED", 26, 7)
            << pad("DURATION", 10, 8) << pad("EXIT", 6, 4) << "REASON\n";
  for (const auto& s : scripts) {
    std::string state = str(s, "state");
    std::string started = "-", duration = "-", exit = "-", reason;
    if (auto* last = s.as_object().if_contains("last_run"); last && state != "pending") {
      started = field_or_dash(*last, "started");
      if (state != "running") {
        duration = fmt::format("{:.1f}s", last->at("duration_seconds").to_number<double>());
        exit = field_or_dash(*last, "exit_code");
        if (exit == "-" && str(*last, "signal") != "0") exit = "sig" + str(*last, "signal");
        reason = str(*last, "reason");
      }
    }
    std::string shown = state == "succeeded" ? "ok" : state;  // colour: green for ok
    std::cout << pad(str(s, "name"), w, str(s, "name").size()) << pad(str(s, "when"), 8, str(s, "when").size())
              << pad(st.state(shown) + (shown == "ok" ? std::string(" ") : std::string()), 13,
                     shown.size() + (shown == "ok" ? 1 : 0))
              << pad(started, 26, started.size()) << pad(duration, 10, duration.size()) << pad(exit, 6, exit.size())
              << reason << "\n";
  }
  return rc;
}

// Prints a capped log from the start (route?...&from=N); with --follow until it ends.
int follow_log(const Args& a, const std::string& route) {
  std::uint64_t from = 0;
  for (;;) {
    auto reply = request(a.socket, http::verb::get, fmt::format("{}&from={}", route, from));
    if (reply.status != 200) agent_refused(reply);
    if (auto sk = reply.headers["X-Instanced-Skipped"]; !sk.empty() && sk != "0")
      std::cout << fmt::format("\n[instancectl: {} bytes of output were not kept]\n", sk);
    std::cout << reply.body << std::flush;
    std::uint64_t next = std::stoull(reply.headers["X-Instanced-Next"].empty() ? "0" : reply.headers["X-Instanced-Next"]);
    bool running = reply.headers["X-Instanced-Running"] == "1";
    if (next == from && (!a.follow || !running)) return kHealthy;
    if (next == from) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    from = next;
  }
}

int cmd_setup_logs(const Args& a, const std::string& name) { return follow_log(a, "/v1/setup/log?name=" + name); }

int cmd_setup_rerun(const Args& a, const std::string& name) {
  auto reply = request(a.socket, http::verb::post, "/v1/setup/rerun?name=" + name);
  if (reply.status != 202) agent_refused(reply);
  std::cout << "rerun of " << name << " queued; follow it with: instancectl setup logs " << name << " --follow\n";
  return kHealthy;
}

int cmd_setup(const Args& a, const Style& st) {
  if (a.operands.empty()) return cmd_setup_list(a, st);
  const std::string& sub = a.operands[0];
  if ((sub == "logs" || sub == "rerun") && a.operands.size() == 2) {
    const std::string& name = a.operands[1];
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        usage_error(fmt::format("'{}' is not a script name", name));
    return sub == "logs" ? cmd_setup_logs(a, name) : cmd_setup_rerun(a, name);
  }
  usage_error("usage: instancectl setup [logs NAME [--follow] | rerun NAME]");
}

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

double num(const json::value& v, std::string_view key) {
  auto* p = v.is_object() ? v.as_object().if_contains(key) : nullptr;
  return p && p->is_number() ? p->to_number<double>() : 0;
}

void print_scan(const json::value& scan, const Style& st) {
  if (auto* run = scan.as_object().if_contains("progress"))
    std::cout << "\nscan running since " << str(scan, "started") << ": " << str(*run, "files") << " entries, "
              << human(num(*run, "bytes")) << " so far\n";
  auto* last = scan.as_object().if_contains("last");
  if (!last) {
    if (str(scan, "state") == "none") std::cout << "\nno scan yet: instancectl disk scan\n";
    return;
  }
  std::cout << "\n" << st.bold("largest on " + str(*last, "root")) << " (scan of " << str(*last, "finished") << ", "
            << human(num(*last, "bytes")) << " in " << str(*last, "files") << " entries, this file system only)\n";
  for (const char* kind : {"top_dirs", "top_files"}) {
    std::cout << (std::string_view(kind) == "top_dirs" ? "  directories:\n" : "  files:\n");
    for (const auto& e : last->at(kind).as_array()) {
      std::string size = human(num(e, "bytes"));
      std::cout << "    " << pad(size, 11, size.size()) << str(e, "path") << "\n";
    }
  }
}

int cmd_disk(const Args& a, const Style& st) {
  const std::string sub = a.operands.empty() ? "" : a.operands[0];
  if (sub == "scan") {
    auto reply = request(a.socket, http::verb::post, "/v1/disk/scan");
    if (reply.status != 202) agent_refused(reply);
    std::cout << "scan started; see it with: instancectl disk\n";
    return kHealthy;
  }
  if (sub == "reclaim") {
    std::string rules;
    for (std::size_t i = 1; i < a.operands.size(); ++i) rules += (rules.empty() ? "" : ",") + a.operands[i];
    auto reply = request(a.socket, http::verb::post,
                         fmt::format("/v1/disk/reclaim?dry_run={}&rules={}", a.dry_run ? 1 : 0, rules));
    if (reply.status != 202) agent_refused(reply);
    // Wait for the report.
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto v = parse_json(request(a.socket, http::verb::get, "/v1/disk").body);
      const auto& r = v.at("reclaim");
      if (str(r, "state") == "running") continue;
      const auto& last = r.at("last");
      if (a.json) {
        std::cout << json::serialize(last) << "\n";
        return kHealthy;
      }
      bool dry = last.at("dry_run").as_bool();
      for (const auto& rule : last.at("rules").as_array()) {
        std::string name = str(rule, "rule");
        if (!rule.at("ran").as_bool()) {
          std::cout << pad(name, 14, name.size()) << "skipped: " << str(rule, "note") << "\n";
          continue;
        }
        std::cout << pad(name, 14, name.size()) << (dry ? "would free " : "freed ") << human(num(rule, "bytes")) << " in "
                  << str(rule, "files") << " files";
        if (num(rule, "errors") > 0) std::cout << ", " << str(rule, "errors") << " errors";
        if (!str(rule, "note").empty()) std::cout << " (" << str(rule, "note") << ")";
        std::cout << "\n";
        for (const auto& c : rule.at("commands").as_array())
          std::cout << "    " << (dry ? "would run: " : "ran: ") << json::value_to<std::string>(c) << "\n";
      }
      std::cout << (dry ? "dry run: would free " : "freed ") << human(num(last, "bytes"));
      if (!str(last, "report").empty()) std::cout << "; every file is listed in " << str(last, "report");
      std::cout << "\n";
      return kHealthy;
    }
  }
  if (!sub.empty()) usage_error("usage: instancectl disk [scan | reclaim [--dry-run] [RULE...]]");
  auto reply = request(a.socket, http::verb::get, "/v1/disk");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& p : v.at("paths").as_array())
    if (str(p, "state") != "ok" && str(p, "state") != "absent") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << pad("PATH", 16, 4) << pad("SIZE", 11, 4) << pad("USED", 11, 4) << pad("FREE", 11, 4)
            << pad("INODES FREE", 13, 11) << "STATE\n";
  for (const auto& p : v.at("paths").as_array()) {
    std::string path = str(p, "path"), state = str(p, "state");
    if (!p.as_object().contains("total_bytes")) {
      std::cout << pad(path, 16, path.size()) << pad("-", 11, 1) << pad("-", 11, 1) << pad("-", 11, 1) << pad("-", 13, 1)
                << st.state(state) << (p.as_object().contains("error") ? " (" + str(p, "error") + ")" : "") << "\n";
      continue;
    }
    std::string size = human(num(p, "total_bytes")), used = human(num(p, "used_bytes")), avail = human(num(p, "avail_bytes"));
    double ti = num(p, "total_inodes");
    std::string inodes = ti > 0 ? fmt::format("{:.0f}%", 100.0 * num(p, "avail_inodes") / ti) : "-";
    std::string shown = state == "ok" ? "ok" : state;
    std::cout << pad(path, 16, path.size()) << pad(size, 11, size.size()) << pad(used, 11, used.size())
              << pad(avail, 11, avail.size()) << pad(inodes, 13, inodes.size()) << st.state(shown) << "\n";
  }
  if (auto* rec = v.as_object().if_contains("recovery"))
    std::cout << "\n" << st.state("failed") << ": " << json::value_to<std::string>(*rec) << "\n";
  print_scan(v.at("scan"), st);
  return rc;
}

int cmd_mounts(const Args& a, const Style& st) {
  if (!a.operands.empty()) {
    if (a.operands[0] != "remount" || a.operands.size() != 2)
      usage_error("usage: instancectl mounts [remount NAME]");
    const std::string& name = a.operands[1];
    for (char c : name)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        usage_error(fmt::format("'{}' is not a mount name", name));
    auto reply = request(a.socket, http::verb::post, "/v1/mounts/remount?name=" + name);
    if (reply.status != 202) agent_refused(reply);
    std::cout << "remounting " << name << "; see it with: instancectl mounts\n";
    return kHealthy;
  }
  auto reply = request(a.socket, http::verb::get, "/v1/mounts");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& m : v.at("mounts").as_array())
    if (str(m, "state") != "mounted") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  if (v.at("mounts").as_array().empty()) {
    std::cout << "no mounts configured (storage.mounts)\n";
    return rc;
  }
  std::cout << pad("NAME", 14, 4) << pad("TYPE", 13, 4) << pad("MOUNT POINT", 32, 11) << pad("STATE", 11, 5)
            << pad("PROBE", 10, 5) << "REMOUNTS\n";
  for (const auto& m : v.at("mounts").as_array()) {
    std::string name = str(m, "name"), type = str(m, "type"), mp = str(m, "mount_point"), state = str(m, "state");
    if (auto* d = m.as_object().if_contains("driver"); d && type == "blob") type += "/" + json::value_to<std::string>(*d);
    const auto& probe = m.at("probe");
    std::string latency = probe.as_object().contains("latency_ms") ? fmt::format("{:.1f}ms", num(probe, "latency_ms")) : "-";
    if (probe.as_object().contains("blocked_for_s")) latency = fmt::format("{:.0f}s!", num(probe, "blocked_for_s"));
    std::string shown = state == "mounted" ? "ok" : state;
    std::cout << pad(name, 14, name.size()) << pad(type, 13, type.size()) << pad(mp, 32, mp.size())
              << pad(st.state(shown), 11, shown.size())
              << pad(latency, 10, latency.size()) << str(m, "remounts") << (m.at("required").as_bool() ? "" : "  (optional)")
              << "\n";
    if (m.as_object().contains("error")) {
      std::string reason = m.as_object().contains("reason") ? str(m, "reason") + ": " : "";
      std::cout << "    " << reason << str(m, "error") << "\n";
    }
  }
  return rc;
}

int cmd_apps(const Args& a, const Style& st) {
  if (!a.operands.empty()) usage_error("usage: instancectl apps");
  auto reply = request(a.socket, http::verb::get, "/v1/apps");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& app : v.at("apps").as_array())
    if (str(app, "state") != "up") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  if (v.at("apps").as_array().empty()) {
    std::cout << "no applications configured (applications.apps)\n";
    return rc;
  }
  std::cout << pad("NAME", 14, 4) << pad("STATE", 11, 5) << pad("PROBE", 10, 5) << pad("RESTARTS", 10, 8) << "ACTIVITY\n";
  for (const auto& app : v.at("apps").as_array()) {
    std::string name = str(app, "name"), state = str(app, "state");
    std::string latency = app.as_object().contains("latency_ms") ? fmt::format("{}ms", str(app, "latency_ms")) : "-";
    std::string restarts = str(app, "restarts") + (app.at("restart").as_bool() ? "" : " (off)");
    std::string activity = "-";
    if (auto* j = app.as_object().if_contains("jupyter")) {
      activity = fmt::format("{} kernels ({} busy), {} terminals", str(*j, "kernels"), str(*j, "busy_kernels"),
                             str(*j, "terminals"));
      if (j->as_object().contains("last_activity")) activity += ", last " + str(*j, "last_activity");
    }
    std::cout << pad(name, 14, name.size()) << pad(st.state(state == "up" ? "ok" : state), 11, state == "up" ? 2 : state.size())
              << pad(latency, 10, latency.size()) << pad(restarts, 10, restarts.size()) << activity << "\n";
    if (app.as_object().contains("reason")) std::cout << "    " << str(app, "reason") << "\n";
    if (app.as_object().contains("jupyter_error")) std::cout << "    Jupyter: " << str(app, "jupyter_error") << "\n";
  }
  return rc;
}

int cmd_idle(const Args& a) {
  if (!a.operands.empty()) usage_error("usage: instancectl idle");
  auto reply = request(a.socket, http::verb::get, "/v1/idle");
  if (reply.status != 200) agent_refused(reply);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto v = parse_json(reply.body);
  if (!v.at("enabled").as_bool()) {
    std::cout << "idle detection is off (idle.enabled)\n";
  } else if (v.at("idle").as_bool()) {
    std::cout << "idle since " << str(v, "idle_since") << "\n";
  } else if (v.as_object().contains("idle_since")) {
    std::cout << "quiet since " << str(v, "idle_since") << " (idle after " << str(v, "after_s") << "s)\n";
  } else {
    std::cout << "active:\n";
    for (const auto& r : v.at("activity").as_array()) std::cout << "  " << json::value_to<std::string>(r) << "\n";
  }
  const auto& s = v.at("schedule");
  std::cout << "schedule (" << str(s, "source") << ", " << str(s, "time_zone") << "):";
  if (s.at("stop").as_array().empty() && s.at("start").as_array().empty()) std::cout << " none";
  std::cout << "\n";
  for (const char* key : {"stop", "start"})
    for (const auto& e : s.at(key).as_array()) std::cout << "  " << key << "  " << json::value_to<std::string>(e) << "\n";
  if (s.as_object().contains("next_stop_local")) std::cout << "next stop:  " << str(s, "next_stop_local") << "\n";
  if (s.as_object().contains("next_start_local")) std::cout << "next start: " << str(s, "next_start_local") << "\n";
  return kHealthy;
}

int cmd_ssh(const Args& a) {
  if (!a.operands.empty()) usage_error("usage: instancectl ssh");
  auto reply = request(a.socket, http::verb::get, "/v1/ssh");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = v.as_object().contains("error") || (v.as_object().contains("compliant") && !v.at("compliant").as_bool())
               ? kDegraded
               : kHealthy;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << "policy:  " << str(v, "policy") << " (from the " << str(v, "source") << ")\n"
            << "unit:    " << str(v, "unit");
  if (v.as_object().contains("unit_file_state"))
    std::cout << ": " << str(v, "unit_file_state") << ", " << str(v, "active_state");
  std::cout << "\n";
  if (v.as_object().contains("applied_at")) std::cout << "applied: " << str(v, "applied_at") << "\n";
  std::cout << "drift:   undone " << str(v, "drifts") << " times"
            << (v.as_object().contains("last_drift") ? ", last " + str(v, "last_drift") : std::string()) << "\n";
  if (v.as_object().contains("error")) std::cout << "error:   " << str(v, "error") << "\n";
  return rc;
}

int cmd_gpu(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/gpu");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  const std::string state = str(v, "state");
  int rc = kHealthy;
  for (const auto& g : v.at("gpus").as_array())
    if (str(g, "health") != "healthy") rc = kDegraded;
  if (state == "stuck" || (state == "unavailable" && v.as_object().contains("detail") &&
                           str(v, "detail").find("not loaded") == std::string::npos))
    rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  const auto& sys = v.at("system");
  if (state != "sampled") {
    std::cout << "GPU: " << st.state(state == "stuck" ? "failed" : state);
    if (v.as_object().contains("detail")) std::cout << " (" << str(v, "detail") << ")";
    std::cout << "\n";
  }
  if (sys.as_object().contains("driver_version"))
    std::cout << "driver " << str(sys, "driver_version") << ", CUDA " << str(sys, "cuda_driver_version") << " supported\n";
  if (!v.at("gpus").as_array().empty()) {
    std::cout << pad("GPU", 5, 3) << pad("NAME", 26, 4) << pad("HEALTH", 12, 6) << pad("MEMORY", 24, 6) << pad("UTIL", 6, 4)
              << pad("TEMP", 7, 4) << pad("POWER", 16, 5) << "ECC (unc)\n";
    for (const auto& g : v.at("gpus").as_array()) {
      std::string idx = str(g, "index"), name = str(g, "name"), health = str(g, "health");
      std::string mem = fmt::format("{} / {}", human(num(g.at("memory"), "used_bytes")), human(num(g.at("memory"), "total_bytes")));
      std::string util = fmt::format("{:.0f}%", num(g.at("utilization"), "gpu_percent"));
      std::string temp = fmt::format("{:.0f}C", num(g.at("temperature"), "celsius"));
      std::string power = fmt::format("{:.0f}/{:.0f}W", num(g.at("power"), "watts"), num(g.at("power"), "limit_watts"));
      std::string ecc = g.at("ecc").as_object().contains("uncorrected_volatile") ? str(g.at("ecc"), "uncorrected_volatile") : "-";
      std::string shown = health == "healthy" ? "ok" : health;
      std::cout << pad(idx, 5, idx.size()) << pad(name, 26, name.size()) << pad(st.state(shown), 12, shown.size())
                << pad(mem, 24, mem.size()) << pad(util, 6, util.size()) << pad(temp, 7, temp.size())
                << pad(power, 16, power.size()) << ecc << "\n";
      for (const auto& r : g.at("reasons").as_array()) std::cout << "    " << json::value_to<std::string>(r) << "\n";
    }
  }
  for (const auto& x : v.at("xids").as_array())
    std::cout << "XID " << str(x, "xid") << " at " << str(x, "time") << " on "
              << (x.as_object().contains("gpu") ? "GPU " + str(x, "gpu") : "PCI " + str(x, "pci_bus_id")) << ": "
              << str(x, "meaning") << " (" << str(x, "source") << ")\n";
  if (auto* cuda = v.as_object().if_contains("cuda")) {
    for (const auto& t : cuda->at("toolkits").as_array()) std::cout << "CUDA toolkit " << str(t, "version") << " in " << str(t, "path") << "\n";
    for (const char* lib : {"cudnn", "nccl"})
      for (const auto& t : cuda->at(lib).as_array())
        std::cout << (std::string_view(lib) == "cudnn" ? "cuDNN " : "NCCL ") << str(t, "version") << " (" << str(t, "file") << ")\n";
    for (const auto& w : cuda->at("warnings").as_array()) std::cout << st.state("warning") << ": " << json::value_to<std::string>(w) << "\n";
  }
  return rc;
}

// "jobs": running, queued (position, waiting), the last finished.
int cmd_jobs(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/jobs");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto cmdline = [](const json::value& j) {
    std::string out;
    if (auto* img = j.as_object().if_contains("image")) out = "[" + json::value_to<std::string>(*img) + "] ";
    for (const auto& c : j.at("command").as_array()) out += json::value_to<std::string>(c) + " ";
    if (!out.empty()) out.pop_back();
    if (out.size() > 48) out = out.substr(0, 45) + "...";
    return out;
  };
  std::cout << "jobs: " << str(v, "running_count") << " of " << str(v, "slots") << " slots in use, " << str(v, "queued_count")
            << " queued" << (v.at("accepting").as_bool() ? "" : " (not accepting: preparing to stop)") << "\n";
  if (auto* e = v.as_object().if_contains("error")) std::cout << st.state("failed") << ": " << json::value_to<std::string>(*e) << "\n";
  const auto& running = v.at("running").as_array();
  const auto& queued = v.at("queued").as_array();
  if (!running.empty() || !queued.empty()) {
    std::cout << "\n" << pad("ID", 22, 2) << pad("STATE", 11, 5) << pad("GPUS", 6, 4) << pad("SINCE", 26, 5) << "COMMAND\n";
    for (const auto& j : running) {
      std::string id = str(j, "id"), state = str(j, "state"), gpus;
      for (const auto& g : j.at("assigned_gpus").as_array()) gpus += (gpus.empty() ? "" : ",") + json::serialize(g);
      if (gpus.empty()) gpus = "-";
      std::string since = field_or_dash(j, "started");
      std::cout << pad(id, 22, id.size()) << pad(state, 11, state.size()) << pad(gpus, 6, gpus.size()) << pad(since, 26, since.size())
                << cmdline(j) << "\n";
    }
    for (const auto& j : queued) {
      std::string id = str(j, "id"), state = "#" + str(j, "position"), gpus = field_or_dash(j, "gpus");
      std::string since = str(j, "submitted");
      std::cout << pad(id, 22, id.size()) << pad(state, 11, state.size()) << pad(gpus, 6, gpus.size()) << pad(since, 26, since.size())
                << cmdline(j) << "\n";
      if (j.as_object().contains("waiting")) std::cout << "    " << str(j, "waiting") << "\n";
    }
    if (queued.size() < v.at("queued_count").to_number<std::size_t>())
      std::cout << "  ... and " << v.at("queued_count").to_number<std::size_t>() - queued.size() << " more queued\n";
  }
  const auto& finished = v.at("finished").as_array();
  if (!finished.empty()) {
    std::cout << "\n" << pad("FINISHED", 22, 8) << pad("STATE", 11, 5) << pad("EXIT", 6, 4) << pad("ENDED", 26, 5) << "REASON\n";
    for (const auto& j : finished) {
      std::string id = str(j, "id"), state = str(j, "state"), exit = field_or_dash(j, "exit_code"), ended = field_or_dash(j, "ended");
      std::string shown = state == "succeeded" ? "ok" : state;
      std::cout << pad(id, 22, id.size()) << pad(st.state(shown), 11, shown.size()) << pad(exit, 6, exit.size())
                << pad(ended, 26, ended.size()) << str(j, "reason") << "\n";
    }
  }
  return kHealthy;
}

std::string checked_job_id(const std::string& id) {
  if (id.empty() || id.size() > 64) usage_error(fmt::format("'{}' is not a job id", id));
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      usage_error(fmt::format("'{}' is not a job id", id));
  return id;
}

int cmd_job_logs(const Args& a, const std::string& id) { return follow_log(a, "/v1/jobs/log?id=" + id); }

// "NAME=VALUE" into o[NAME].
void put_pair(json::object& o, const std::string& flag, const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) usage_error(fmt::format("{} wants NAME=VALUE, not '{}'", flag, text));
  o[text.substr(0, eq)] = text.substr(eq + 1);
}

int cmd_job_submit(const Args& a, const std::vector<std::string>& args) {
  json::object job, env, labels;
  json::array command;
  std::size_t i = 0;
  auto value = [&](const std::string& flag) -> std::string {
    if (i + 1 >= args.size()) usage_error(flag + " needs a value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "--id") job["id"] = value(arg);
    else if (arg == "--image") job["image"] = value(arg);
    else if (arg == "--image-archive") job["image_archive"] = value(arg);
    else if (arg == "--workdir") job["workdir"] = value(arg);
    else if (arg == "--user") job["user"] = value(arg);
    else if (arg == "--timeout") job["timeout"] = value(arg);
    else if (arg == "--gpus") {
      std::string g = value(arg);
      if (g == "all") {
        job["gpus"] = "all";
      } else {
        char* end = nullptr;
        long n = std::strtol(g.c_str(), &end, 10);
        if (g.empty() || *end) usage_error(fmt::format("--gpus wants a count or 'all', not '{}'", g));
        job["gpus"] = n;
      }
    } else if (arg == "--cpu-weight") {
      std::string w = value(arg);
      char* end = nullptr;
      long n = std::strtol(w.c_str(), &end, 10);
      if (w.empty() || *end) usage_error(fmt::format("--cpu-weight wants a number, not '{}'", w));
      job["cpu_weight"] = n;
    } else if (arg == "--env") put_pair(env, arg, value(arg));
    else if (arg == "--label") put_pair(labels, arg, value(arg));
    else if (arg.starts_with("-")) usage_error(fmt::format("job submit: unknown option '{}' (the command goes after --)", arg));
    else break;
  }
  for (; i < args.size(); ++i) command.emplace_back(args[i]);
  if (command.empty()) usage_error("job submit: a command is needed (instancectl job submit [OPTIONS] -- COMMAND [ARG...])");
  job["command"] = std::move(command);
  if (!env.empty()) job["env"] = std::move(env);
  if (!labels.empty()) job["labels"] = std::move(labels);
  auto reply = request(a.socket, http::verb::post, "/v1/jobs", json::serialize(job));
  if (reply.status != 202 && reply.status != 200) agent_refused(reply);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto v = parse_json(reply.body);
  std::string id = str(v, "id");
  if (reply.status == 200)
    std::cout << "job " << id << " was already submitted: " << str(v, "state") << "\n";
  else if (str(v, "state") == "queued")
    std::cout << "job " << id << " queued at position " << str(v, "position") << "; follow it with: instancectl job logs " << id
              << " --follow\n";
  else
    std::cout << "job " << id << " started; follow it with: instancectl job logs " << id << " --follow\n";
  return kHealthy;
}

int cmd_job(const Args& a) {
  const std::vector<std::string>& ops = a.operands;
  const char* usage = "usage: instancectl job submit [OPTIONS] -- COMMAND [ARG...] | show ID | logs ID [--follow] | cancel ID";
  if (ops.empty()) usage_error(usage);
  if (ops[0] == "submit") return cmd_job_submit(a, std::vector<std::string>(ops.begin() + 1, ops.end()));
  if (ops.size() != 2) usage_error(usage);
  const std::string id = checked_job_id(ops[1]);
  if (ops[0] == "logs") return cmd_job_logs(a, id);
  if (ops[0] == "cancel") {
    auto reply = request(a.socket, http::verb::post, "/v1/jobs/cancel?id=" + id);
    if (reply.status != 200) agent_refused(reply);
    auto v = parse_json(reply.body);
    std::cout << (str(v, "state") == "cancelled" ? "job " + id + " cancelled\n" : "job " + id + ": cancel requested; it is being stopped\n");
    return kHealthy;
  }
  if (ops[0] != "show") usage_error(usage);
  auto reply = request(a.socket, http::verb::get, "/v1/jobs/job?id=" + id);
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  std::string state = str(v, "state");
  int rc = state == "failed" || state == "timed_out" || state == "lost" ? kDegraded : kHealthy;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  for (const auto& [k, val] : v.as_object())
    std::cout << pad(std::string(k), 18, k.size()) << (val.is_string() ? std::string(val.as_string()) : json::serialize(val)) << "\n";
  return rc;
}

int cmd_reboot(const Args& a) {
  auto reply = request(a.socket, http::verb::post, "/v1/reboot");
  if (reply.status == 409) {
    std::cerr << "instancectl: " << str(parse_json(reply.body), "error") << "\n";
    return kDegraded;
  }
  if (reply.status != 202) agent_refused(reply);
  std::cout << "rebooting\n";
  return kHealthy;
}

int cmd_version(const Args& a) {
  auto reply = request(a.socket, http::verb::get, "/v1/version");
  if (reply.status != 200) throw Failure(kRefused, fmt::format("the agent answered HTTP {}: {}", reply.status, reply.body));
  auto v = parse_json(reply.body);
  if (a.json)
    std::cout << reply.body;
  else
    std::cout << "instancectl " << INSTANCED_VERSION << "\ninstanced " << str(v, "version") << "\n";
  return kHealthy;
}

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("INSTANCED_SOCKET"); env && *env) a.socket = env;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (arg == "--socket" && i + 1 < args.size()) {
      a.socket = args[++i];
    } else if (arg.starts_with("--socket=")) {
      a.socket = arg.substr(9);
    } else if (a.command == "job") {
      // Everything after "job" is the subcommand's (submit has options of its own).
      if (arg == "--follow" || arg == "-f") a.follow = true;
      else if (arg == "--json" && (a.operands.empty() || a.operands[0] != "submit")) a.json = true;
      else a.operands.push_back(arg);
    } else if (arg == "--json") {
      a.json = true;
    } else if (arg == "--follow" || arg == "-f") {
      a.follow = true;
    } else if (arg == "--dry-run" || arg == "-n") {
      a.dry_run = true;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsageText;
      return 0;
    } else if (!arg.starts_with("-") && a.command.empty()) {
      a.command = arg;
    } else if (!arg.starts_with("-") && a.command == "setup" && a.operands.size() < 2) {
      a.operands.push_back(arg);
    } else if (!arg.starts_with("-") && a.command == "mounts" && a.operands.size() < 2) {
      a.operands.push_back(arg);
    } else if (!arg.starts_with("-") && a.command == "disk" && a.operands.size() < 16) {
      a.operands.push_back(arg);
    } else {
      std::cerr << "instancectl: unexpected argument '" << arg << "'\n" << kUsageText;
      return kUsage;
    }
  }
  Style style;
  style.colour = isatty(1) && !std::getenv("NO_COLOR");
  try {
    if (a.command == "status") return cmd_status(a, style);
    if (a.command == "health") return cmd_health(a, style);
    if (a.command == "version") return cmd_version(a);
    if (a.command == "control") return cmd_control(a, style);
    if (a.command == "setup") return cmd_setup(a, style);
    if (a.command == "disk") return cmd_disk(a, style);
    if (a.command == "mounts") return cmd_mounts(a, style);
    if (a.command == "gpu") return cmd_gpu(a, style);
    if (a.command == "jobs") return cmd_jobs(a, style);
    if (a.command == "job") return cmd_job(a);
    if (a.command == "reboot") return cmd_reboot(a);
    if (a.command == "apps") return cmd_apps(a, style);
    if (a.command == "idle") return cmd_idle(a);
    if (a.command == "ssh") return cmd_ssh(a);
    std::cerr << (a.command.empty() ? std::string("instancectl: a command is needed\n")
                                    : "instancectl: unknown command '" + a.command + "'\n")
              << kUsageText;
    return kUsage;
  } catch (const Failure& e) {
    std::cerr << "instancectl: " << e.what() << "\n";
    return e.code;
  } catch (const std::exception& e) {  // an answer that is not what the agent sends
    std::cerr << "instancectl: " << e.what() << "\n";
    return kRefused;
  }
}
