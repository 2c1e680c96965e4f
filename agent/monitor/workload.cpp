#include "agent/monitor/workload.hpp"

#include <algorithm>
#include <array>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/fs.hpp"

namespace instanced::monitor {
namespace json = boost::json;

namespace {

// About 139 years in milliseconds: a time or duration read stays far from overflowing
// when it becomes nanoseconds (the system clock's unit in libstdc++).
constexpr std::int64_t kMaxNumber = 1LL << 42;
constexpr std::int64_t kMaxId = 0xfffffffe;  // a uid or gid (-1 is "none")
constexpr std::int64_t kMaxPid = 1 << 22;      // the kernel's highest pid_max
constexpr std::size_t kMaxPids = 1 << 16;
constexpr std::array<std::string_view, 4> kOutcomes{"exited", "timed_out", "cancelled", "not_started"};

std::int64_t millis(Clock::wall_time t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}
Clock::wall_time from_millis(std::int64_t ms) {
  return Clock::wall_time{std::chrono::duration_cast<Clock::wall_time::duration>(std::chrono::milliseconds(ms))};
}

json::array strings(const std::vector<std::string>& v) {
  json::array a;
  for (const auto& s : v) a.emplace_back(s);
  return a;
}

// Reads the fields of one JSON object; the first problem is kept with the field's name.
class Fields {
 public:
  Fields(std::string_view text, std::string_view what) : what_(what) {
    boost::system::error_code ec;
    json::parse_options opt;
    opt.max_depth = 8;
    value_ = json::parse(text, ec, {}, opt);
    if (ec) fail("", fmt::format("not valid JSON: {}", ec.message()));
    else if (!value_.is_object()) fail("", "not a JSON object");
  }
  const std::optional<Error>& error() const { return error_; }

  const json::value* get(std::string_view key, bool required) {
    if (error_) return nullptr;
    const json::value* v = value_.as_object().if_contains(key);
    if (!v && required) fail(key, "missing");
    return v;
  }
  std::string str(std::string_view key, bool required = true) {
    const json::value* v = get(key, required);
    if (v && !v->is_string()) fail(key, "must be a string");
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
  }
  // An integer in [min, kMaxNumber] (times in milliseconds stay far from overflow).
  std::int64_t num(std::string_view key, bool required = true, std::int64_t min = 0, std::int64_t max = kMaxNumber) {
    const json::value* v = get(key, required);
    const bool ok = v && v->is_int64() && v->as_int64() >= min && v->as_int64() <= max;
    if (v && !ok) fail(key, fmt::format("must be an integer from {} to {}", min, max));
    return ok ? v->as_int64() : 0;
  }
  std::vector<std::string> list(std::string_view key, bool required = true) {
    std::vector<std::string> out;
    const json::value* v = get(key, required);
    if (!v) return out;
    if (!v->is_array()) fail(key, "must be an array of strings");
    else
      for (const auto& e : v->as_array())
        if (e.is_string()) out.emplace_back(e.as_string());
        else fail(key, "must be an array of strings");
    return out;
  }
  // Process ids (optional): at most kMaxPids of them, each within the kernel's pid_max.
  std::vector<pid_t> pids(std::string_view key) {
    std::vector<pid_t> out;
    const json::value* v = get(key, false);
    if (!v) return out;
    const bool ok = v->is_array() && v->as_array().size() <= kMaxPids &&
                    std::all_of(v->as_array().begin(), v->as_array().end(), [](const json::value& e) {
                      return e.is_int64() && e.as_int64() > 0 && e.as_int64() <= kMaxPid;
                    });
    if (!ok) fail(key, fmt::format("must be an array of at most {} process ids", kMaxPids));
    else
      for (const auto& e : v->as_array()) out.push_back(static_cast<pid_t>(e.as_int64()));
    return out;
  }
  const json::object* object(std::string_view key, bool required = true) {
    const json::value* v = get(key, required);
    if (v && !v->is_object()) fail(key, "must be an object");
    return v && v->is_object() ? &v->as_object() : nullptr;
  }
  void fail(std::string_view key, std::string_view why) {
    if (!error_) error_ = Error{key.empty() ? fmt::format("{}: {}", what_, why) : fmt::format("{}: {}: {}", what_, key, why)};
  }

 private:
  std::string what_;
  json::value value_;
  std::optional<Error> error_;
};

json::object user_json(const UserIdentity& u) {
  json::array groups;
  for (gid_t g : u.groups) groups.emplace_back(g);
  return {{"name", u.name}, {"uid", u.uid}, {"gid", u.gid}, {"groups", std::move(groups)}, {"home", u.home},
          {"shell", u.shell}};
}

Result<UserIdentity> parse_user(const json::object& o) {
  Fields f(json::serialize(o), "spec.json: user");
  UserIdentity u;
  u.name = f.str("name");
  u.uid = static_cast<uid_t>(f.num("uid", true, 0, kMaxId));
  u.gid = static_cast<gid_t>(f.num("gid", true, 0, kMaxId));
  u.home = f.str("home", false);
  u.shell = f.str("shell", false);
  if (const json::value* g = f.get("groups", false); g && g->is_array())
    for (const auto& e : g->as_array())
      if (e.is_int64() && e.as_int64() >= 0 && e.as_int64() <= kMaxId) u.groups.push_back(static_cast<gid_t>(e.as_int64()));
  if (f.error()) return *f.error();
  return u;
}

}  // namespace

std::string WorkloadSpec::to_text() const {
  json::array limits;
  for (const auto& [resource, value] : spawn.limits) limits.emplace_back(json::array{resource, value});
  json::object o{{"name", name},
                 {"argv", strings(spawn.argv)},
                 {"env", strings(spawn.env)},
                 {"cwd", spawn.cwd},
                 {"limits", std::move(limits)},
                 {"nice", spawn.nice},
                 {"timeout_ms", timeout.count()},
                 {"kill_grace_ms", kill_grace.count()},
                 {"started_ms", millis(started)},
                 {"log_file", log_file},
                 {"max_log_bytes", max_log_bytes},
                 {"tail_lines", tail_lines},
                 {"journal", journal},
                 {"journal_identifier", journal_identifier},
                 {"journal_field", journal_field},
                 {"journal_value", journal_value},
                 {"marker", marker},
                 {"keep_left_behind", keep_left_behind},
                 {"inline_script", inline_script},
                 {"own_cgroup", own_cgroup}};
  if (spawn.user) o["user"] = user_json(*spawn.user);
  return json::serialize(o);
}

Result<WorkloadSpec> WorkloadSpec::parse(std::string_view text) {
  Fields f(text, "spec.json");
  WorkloadSpec s;
  s.name = f.str("name");
  s.spawn.argv = f.list("argv");
  s.spawn.env = f.list("env");
  s.spawn.cwd = f.str("cwd");
  s.spawn.nice = static_cast<int>(f.num("nice", false, -20, 19));
  s.timeout = Duration(f.num("timeout_ms"));
  s.kill_grace = Duration(f.num("kill_grace_ms"));
  s.started = from_millis(f.num("started_ms"));
  s.log_file = f.str("log_file");
  s.max_log_bytes = static_cast<std::uint64_t>(f.num("max_log_bytes", true, 2));
  s.tail_lines = static_cast<std::size_t>(f.num("tail_lines"));
  if (const json::value* j = f.get("journal", false)) s.journal = j->is_bool() && j->as_bool();
  s.journal_identifier = f.str("journal_identifier", false);
  s.journal_field = f.str("journal_field", false);
  s.journal_value = f.str("journal_value", false);
  s.marker = f.str("marker", false);
  if (const json::value* k = f.get("keep_left_behind", false)) s.keep_left_behind = k->is_bool() && k->as_bool();
  s.inline_script = f.str("inline_script", false);
  if (const json::value* c = f.get("own_cgroup", false)) s.own_cgroup = c->is_bool() && c->as_bool();
  if (const json::value* l = f.get("limits", false); l && l->is_array())
    for (const auto& e : l->as_array()) {
      const json::array* pair = e.if_array();
      if (!pair || pair->size() != 2 || !(*pair)[0].is_int64() || (*pair)[0].as_int64() < 0 ||
          (*pair)[0].as_int64() > 64 || !((*pair)[1].is_uint64() || ((*pair)[1].is_int64() && (*pair)[1].as_int64() >= 0)))
        f.fail("limits", "must be [resource, value] pairs");
      else
        s.spawn.limits.emplace_back(static_cast<int>((*pair)[0].as_int64()), (*pair)[1].to_number<std::uint64_t>());
    }
  if (const json::object* u = f.object("user", false)) {
    auto user = parse_user(*u);
    if (!user) return user.error();
    s.spawn.user = std::move(*user);
  }
  if (f.error()) return *f.error();
  if (s.spawn.argv.empty() || s.spawn.argv.front().empty() || s.spawn.argv.front().front() != '/')
    return Error{"spec.json: argv: the program must be an absolute path"};
  if (s.log_file.empty() || s.log_file.front() != '/') return Error{"spec.json: log_file: must be an absolute path"};
  return s;
}

std::string MonitorInfo::to_text() const {
  return json::serialize(json::object{
      {"pid", pid}, {"start_ticks", start_ticks}, {"child", child}, {"started_ms", millis(started)}});
}

Result<MonitorInfo> MonitorInfo::parse(std::string_view text) {
  Fields f(text, "monitor.json");
  MonitorInfo m;
  m.pid = static_cast<pid_t>(f.num("pid", true, 1, kMaxPid));
  m.start_ticks = static_cast<std::uint64_t>(f.num("start_ticks"));
  m.child = static_cast<pid_t>(f.num("child", false, 0, kMaxPid));
  m.started = from_millis(f.num("started_ms", false));
  if (f.error()) return *f.error();
  return m;
}

std::string_view to_string(Outcome o) { return kOutcomes[static_cast<std::size_t>(o)]; }

std::string WorkloadExit::to_text() const {
  return json::serialize(json::object{{"outcome", to_string(outcome)},
                                      {"code", status.code},
                                      {"signal", status.signal},
                                      {"ended_ms", millis(ended)},
                                      {"reason", reason},
                                      {"layout", layout.to_json()},
                                      {"tail", strings(tail)},
                                      {"left_behind", json::array(left_behind.begin(), left_behind.end())},
                                      {"out_of_memory", out_of_memory}});
}

Result<WorkloadExit> WorkloadExit::parse(std::string_view text) {
  Fields f(text, "exit.json");
  WorkloadExit e;
  const std::string outcome = f.str("outcome");
  e.status.code = static_cast<int>(f.num("code", true, -1, 255));
  e.status.signal = static_cast<int>(f.num("signal", true, 0, 128));
  e.ended = from_millis(f.num("ended_ms"));
  e.reason = f.str("reason", false);
  if (const json::object* l = f.object("layout", false)) e.layout = LogLayout::from_json(*l);
  e.tail = f.list("tail", false);
  e.left_behind = f.pids("left_behind");
  if (const json::value* m = f.get("out_of_memory", false)) e.out_of_memory = m->is_bool() && m->as_bool();
  if (f.error()) return *f.error();
  auto it = std::find(kOutcomes.begin(), kOutcomes.end(), outcome);
  if (it == kOutcomes.end()) return Error{fmt::format("exit.json: outcome: '{}' is not one this agent knows", outcome)};
  e.outcome = static_cast<Outcome>(it - kOutcomes.begin());
  return e;
}

std::optional<std::uint64_t> process_start_ticks(pid_t pid) {
  if (pid <= 0) return std::nullopt;
  auto stat = read_regular_file(fmt::format("/proc/{}/stat", pid), 4096);
  if (!stat) return std::nullopt;
  // After the command's closing parenthesis: state, then field 22 (starttime) is the 20th.
  const auto paren = stat->rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat->size()) return std::nullopt;
  std::string_view rest = std::string_view(*stat).substr(paren + 2);
  if (rest.front() == 'Z' || rest.front() == 'X') return std::nullopt;
  for (int field = 3; field < 22; ++field) {
    auto space = rest.find(' ');
    if (space == std::string_view::npos) return std::nullopt;
    rest.remove_prefix(space + 1);
  }
  std::uint64_t ticks = 0;
  for (char c : rest.substr(0, rest.find(' '))) {
    if (c < '0' || c > '9') return std::nullopt;
    ticks = ticks * 10 + static_cast<std::uint64_t>(c - '0');
  }
  return ticks;
}

bool monitor_running(const MonitorInfo& info) {
  auto ticks = process_start_ticks(info.pid);
  return ticks && *ticks == info.start_ticks;
}

}  // namespace instanced::monitor
