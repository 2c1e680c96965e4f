#include "agent/status/views.hpp"

#include <boost/json/serialize.hpp>
#include <cmath>
#include <dirent.h>
#include <fmt/format.h>
#include <fstream>
#include <sstream>
#include <unistd.h>

namespace instanced::status {
namespace {

double seconds_since(Clock::steady_time from, Clock::steady_time now) {
  return std::chrono::duration<double>(now - from).count();
}

double unix_seconds(Clock::wall_time t) {
  return std::chrono::duration<double>(t.time_since_epoch()).count();
}

std::string escape_label(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) return fmt::format("{}", static_cast<long long>(v));
  return fmt::format("{}", v);
}

void family(std::string& out, const std::string& name, const std::string& help, std::string_view type) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, escape_help(help), name, type);
}

void sample(std::string& out, const std::string& name, const Labels& labels, double value) {
  out += name;
  if (!labels.empty()) {
    out.push_back('{');
    bool first = true;
    for (const auto& [k, v] : labels) {
      if (!first) out.push_back(',');
      first = false;
      out += fmt::format("{}=\"{}\"", k, escape_label(v));
    }
    out.push_back('}');
  }
  out += ' ' + format_value(value) + '\n';
}

// A histogram's cumulative _bucket series (le="…", then +Inf), _sum and _count.
void histogram(std::string& out, const std::string& name, const Labels& labels, const Metrics::Histogram& h) {
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < h.counts.size(); ++i) {
    cumulative += h.counts[i];
    Labels with_le = labels;
    with_le.emplace_back("le", i < h.bounds.size() ? format_value(h.bounds[i]) : "+Inf");
    sample(out, name + "_bucket", with_le, static_cast<double>(cumulative));
  }
  sample(out, name + "_sum", labels, h.sum);
  sample(out, name + "_count", labels, static_cast<double>(h.count));
}

std::string_view type_name(Metrics::Type t) {
  switch (t) {
    case Metrics::Type::counter: return "counter";
    case Metrics::Type::histogram: return "histogram";
    case Metrics::Type::gauge: break;
  }
  return "gauge";
}

// Standard process_* metrics of this process, from /proc/self.
struct ProcessStats {
  double cpu_seconds = 0;
  double rss_bytes = 0;
  double open_fds = 0;
};

ProcessStats process_stats() {
  ProcessStats s;
  std::ifstream stat("/proc/self/stat");
  std::string line;
  if (std::getline(stat, line)) {
    auto close = line.rfind(')');
    if (close != std::string::npos) {
      std::istringstream rest(line.substr(close + 2));
      std::string field;
      unsigned long utime = 0, stime = 0;
      long rss_pages = 0;
      // Fields after the command name start at field 3 (state); utime is 14, stime 15, rss 24.
      for (int i = 3; i <= 24 && rest >> field; ++i) {
        if (i == 14) utime = std::stoul(field);
        if (i == 15) stime = std::stoul(field);
        if (i == 24) rss_pages = std::stol(field);
      }
      double hz = static_cast<double>(sysconf(_SC_CLK_TCK));
      s.cpu_seconds = static_cast<double>(utime + stime) / hz;
      s.rss_bytes = static_cast<double>(rss_pages) * static_cast<double>(sysconf(_SC_PAGESIZE));
    }
  }
  if (DIR* d = opendir("/proc/self/fd")) {
    while (auto* e = readdir(d))
      if (e->d_name[0] != '.') s.open_fds += 1;
    closedir(d);
    s.open_fds -= 1;  // the directory stream itself
  }
  return s;
}

}  // namespace

boost::json::object status_json(const AgentInfo& info, const StateRegistry& state, const Clock& clock,
                                std::size_t max_events) {
  boost::json::object o;
  o["version"] = info.version;
  o["instance"] = info.instance;
  o["state"] = std::string(to_string(state.overall()));
  o["phase"] = info.phase;
  o["started_at"] = iso8601(info.started_wall);
  o["uptime_seconds"] = static_cast<std::int64_t>(seconds_since(info.started, clock.now()));

  boost::json::object config;
  config["file"] = info.config_file.string();
  boost::json::array dropins;
  for (const auto& d : info.dropins) dropins.emplace_back(d.string());
  config["dropins"] = std::move(dropins);
  config["hash"] = info.config_hash;
  config["loaded_at"] = iso8601(info.config_loaded_at);
  if (info.last_reload) {
    boost::json::object r;
    r["result"] = info.last_reload->ok ? "ok" : "failed";
    r["at"] = iso8601(info.last_reload->at);
    if (!info.last_reload->ok) r["error"] = info.last_reload->error;
    config["last_reload"] = std::move(r);
  }
  o["config"] = std::move(config);

  boost::json::object subsystems;
  for (const auto& [name, s] : state.subsystems()) {
    boost::json::object sub;
    sub["state"] = std::string(to_string(s.health));
    sub["summary"] = s.summary;
    sub["since"] = iso8601(s.since);
    if (!s.details.empty()) sub["details"] = s.details;
    if (auto r = info.restarts.find(name); r != info.restarts.end()) sub["restarts"] = r->second;
    subsystems[name] = std::move(sub);
  }
  o["subsystems"] = std::move(subsystems);

  boost::json::array events;
  const auto& all = state.events();
  std::size_t skip = all.size() > max_events ? all.size() - max_events : 0;
  for (std::size_t i = skip; i < all.size(); ++i) {
    const auto& e = all[i];
    boost::json::object ev;
    ev["seq"] = e.seq;
    ev["time"] = iso8601(e.time);
    ev["subsystem"] = e.subsystem;
    ev["type"] = e.type;
    ev["message"] = e.message;
    if (!e.data.empty()) ev["data"] = e.data;
    events.emplace_back(std::move(ev));
  }
  o["events"] = std::move(events);
  return o;
}

Response health_response(const AgentInfo& info, const StateRegistry& state) {
  boost::json::object o;
  boost::json::array reasons;
  if (info.phase == "starting") reasons.emplace_back("agent: starting");
  if (info.phase == "stopping") reasons.emplace_back("agent: stopping");
  for (const auto& p : state.problems()) reasons.emplace_back(p);
  bool healthy = reasons.empty();
  o["status"] = healthy ? "healthy" : "unhealthy";
  o["state"] = std::string(to_string(state.overall()));
  if (!healthy) o["reasons"] = std::move(reasons);
  return json_response(healthy ? http::status::ok : http::status::service_unavailable,
                       boost::json::serialize(o));
}

std::string render_metrics(const AgentInfo& info, const StateRegistry& state, const Clock& clock) {
  std::string out;
  family(out, "instanced_build_info", "Version of the running agent.", "gauge");
  sample(out, "instanced_build_info", {{"version", info.version}}, 1);
  family(out, "instanced_uptime_seconds", "Seconds since the agent started.", "gauge");
  sample(out, "instanced_uptime_seconds", {}, seconds_since(info.started, clock.now()));
  family(out, "instanced_healthy", "1 when every subsystem is ok, else 0.", "gauge");
  sample(out, "instanced_healthy", {}, state.overall() == Health::ok && info.phase == "running" ? 1 : 0);
  family(out, "instanced_subsystem_state", "Current state of each subsystem (1 for the current state).", "gauge");
  for (const auto& [name, s] : state.subsystems())
    for (auto h : {Health::ok, Health::starting, Health::degraded, Health::failed})
      sample(out, "instanced_subsystem_state", {{"subsystem", name}, {"state", std::string(to_string(h))}},
             s.health == h ? 1 : 0);
  for (const auto& [name, f] : state.metrics().families()) {
    family(out, name, f.help, type_name(f.type));
    for (const auto& [labels, v] : f.samples) sample(out, name, labels, v);
    for (const auto& [labels, h] : f.histograms) histogram(out, name, labels, h);
  }
  auto ps = process_stats();
  family(out, "process_cpu_seconds_total", "Total user and system CPU time spent in seconds.", "counter");
  sample(out, "process_cpu_seconds_total", {}, ps.cpu_seconds);
  family(out, "process_resident_memory_bytes", "Resident memory size in bytes.", "gauge");
  sample(out, "process_resident_memory_bytes", {}, ps.rss_bytes);
  family(out, "process_open_fds", "Number of open file descriptors.", "gauge");
  sample(out, "process_open_fds", {}, ps.open_fds);
  family(out, "process_start_time_seconds", "Start time of the process since unix epoch in seconds.", "gauge");
  sample(out, "process_start_time_seconds", {}, unix_seconds(info.started_wall));
  return out;
}

void add_agent_routes(Router& router, const AgentInfo& info, const StateRegistry& state, const Clock& clock) {
  router.add(http::verb::get, "/v1/status", [&](const Request&) {
    return json_response(http::status::ok, boost::json::serialize(status_json(info, state, clock)));
  });
  router.add(http::verb::get, "/v1/health", [&](const Request&) { return health_response(info, state); });
  router.add(http::verb::get, "/v1/version", [&](const Request&) {
    boost::json::object o;
    o["version"] = info.version;
    return json_response(http::status::ok, boost::json::serialize(o));
  });
  router.add(http::verb::get, "/metrics", [&](const Request&) {
    return text_response(http::status::ok, render_metrics(info, state, clock),
                         "text/plain; version=0.0.4; charset=utf-8");
  });
}

}  // namespace instanced::status
