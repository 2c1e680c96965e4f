#include "agent/jobs/spec.hpp"

#include <array>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cctype>
#include <fmt/format.h>
#include <random>

namespace instanced::jobs {
namespace json = boost::json;

namespace {

constexpr std::array<std::string_view, 8> kStates{"queued",    "starting", "running",   "succeeded",
                                                 "failed",    "cancelled", "timed_out", "lost"};
constexpr std::size_t kMaxSpecBytes = 64 << 10;  // a job's JSON, whole
constexpr std::size_t kMaxArgs = 4096;
constexpr std::size_t kMaxLabels = 32;

bool name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'; }

std::optional<std::string> check_id(std::string_view v) {
  if (v.empty() || v.size() > 64) return std::string("must have 1 to 64 characters");
  if (v.front() == '.' || v.front() == '-') return fmt::format("'{}' must start with a letter, digit or '_'", v);
  for (char c : v)
    if (!name_char(c)) return fmt::format("'{}' may contain only letters, digits, '.', '_' and '-'", v);
  return std::nullopt;
}

std::optional<std::string> check_env_name(std::string_view k) {
  if (k.empty() || k.size() > 128) return std::string("names must have 1 to 128 characters");
  if (!check::is_environment_name(k))
    return fmt::format("'{}' is not a variable name ({})", k,
                       std::isdigit(static_cast<unsigned char>(k.front())) ? "it starts with a digit" : "letters, digits and '_'");
  if (k.starts_with("INSTANCED_")) return fmt::format("'{}': INSTANCED_* variables are set by the agent", k);
  return std::nullopt;
}

std::string random_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("job-{:012x}", rng() & 0xffffffffffffULL);
}

Result<std::map<std::string, std::string>> string_map(const json::value& v, const std::string& field,
                                                      bool env) {
  if (!v.is_object()) return Error{field + ": must be an object of strings"};
  std::map<std::string, std::string> out;
  for (const auto& [k, val] : v.as_object()) {
    std::string key(k);
    if (env) {
      if (auto bad = check_env_name(key)) return Error{fmt::format("{}: {}", field, *bad)};
    } else if (key.empty() || key.size() > 63) {
      return Error{fmt::format("{}: keys must have 1 to 63 characters", field)};
    }
    if (!val.is_string()) return Error{fmt::format("{}.{}: must be a string", field, key)};
    std::string_view s = val.as_string();
    if (s.find('\0') != std::string_view::npos) return Error{fmt::format("{}.{}: must not contain a NUL byte", field, key)};
    if (!env && s.size() > 256) return Error{fmt::format("{}.{}: at most 256 characters", field, key)};
    out.emplace(std::move(key), std::string(s));
  }
  if (!env && out.size() > kMaxLabels) return Error{fmt::format("{}: at most {} labels", field, kMaxLabels)};
  return out;
}

json::object string_map_json(const std::map<std::string, std::string>& m) {
  json::object o;
  for (const auto& [k, v] : m) o[k] = v;
  return o;
}

}  // namespace

std::string_view to_string(JobState s) { return kStates[static_cast<std::size_t>(s)]; }

std::optional<JobState> parse_job_state(std::string_view s) {
  for (std::size_t i = 0; i < kStates.size(); ++i)
    if (kStates[i] == s) return static_cast<JobState>(i);
  return std::nullopt;
}

Result<JobSpec> parse_job_spec(const json::object& o, const JobsConfig& config, std::string_view where) {
  const std::string w(where);
  auto err = [&](std::string_view field, std::string msg) { return Error{fmt::format("{}{}: {}", w, field, msg)}; };
  if (json::serialize(o).size() > kMaxSpecBytes) return Error{fmt::format("{}: the job is larger than {} bytes", w.empty() ? "job" : w.substr(0, w.size() - 1), kMaxSpecBytes)};
  JobSpec s;
  auto text = [&](std::string_view field, std::string& out, std::size_t max) -> std::optional<Error> {
    auto* v = o.if_contains(field);
    if (!v || v->is_null()) return std::nullopt;
    if (!v->is_string()) return err(field, "must be a string");
    if (v->as_string().size() > max) return err(field, fmt::format("at most {} characters", max));
    if (std::string_view(v->as_string()).find('\0') != std::string_view::npos) return err(field, "must not contain a NUL byte");
    out = std::string(v->as_string());
    return std::nullopt;
  };
  for (const auto& [k, v] : o) {
    static constexpr std::array<std::string_view, 11> known{"id",   "image", "image_archive", "command", "env",   "workdir",
                                                           "user", "gpus",  "cpu_weight",    "timeout", "labels"};
    if (std::find(known.begin(), known.end(), std::string_view(k)) == known.end())
      return err(k, "unknown field (known: id, image, image_archive, command, env, workdir, user, gpus, cpu_weight, timeout, labels)");
  }
  if (auto e = text("id", s.id, 64)) return *e;
  if (s.id.empty()) {
    if (o.contains("id")) return err("id", "must not be empty (leave it out to have one made)");
    s.id = random_id();
  } else if (auto bad = check_id(s.id)) {
    return err("id", *bad);
  }
  if (auto e = text("image", s.image, 512)) return *e;
  if (auto e = text("image_archive", s.image_archive, 4096)) return *e;
  if (!s.image_archive.empty()) {
    if (s.image.empty()) return err("image_archive", "needs 'image' (the image the archive holds)");
    if (s.image_archive.front() != '/') return err("image_archive", fmt::format("'{}' must be an absolute path", s.image_archive));
  }
  for (char c : s.image)
    if (std::isspace(static_cast<unsigned char>(c)) || std::iscntrl(static_cast<unsigned char>(c)))
      return err("image", "must not contain spaces or control characters");
  if (!s.image.empty() && s.image.front() == '-') return err("image", "must not start with '-'");

  auto* cmd = o.if_contains("command");
  if (!cmd) return err("command", "missing (an array: the program and its arguments)");
  if (!cmd->is_array() || cmd->as_array().empty()) return err("command", "must be a non-empty array of strings");
  if (cmd->as_array().size() > kMaxArgs) return err("command", fmt::format("at most {} arguments", kMaxArgs));
  for (std::size_t i = 0; i < cmd->as_array().size(); ++i) {
    const auto& a = cmd->as_array()[i];
    if (!a.is_string()) return err(fmt::format("command[{}]", i), "must be a string");
    if (std::string_view(a.as_string()).find('\0') != std::string_view::npos)
      return err(fmt::format("command[{}]", i), "must not contain a NUL byte");
    s.command.emplace_back(a.as_string());
  }
  if (s.command.front().empty()) return err("command[0]", "the program must not be empty");

  if (auto* e = o.if_contains("env")) {
    auto m = string_map(*e, w + "env", true);
    if (!m) return m.error();
    s.env = std::move(*m);
    if (!s.image.empty())
      for (const auto& [k, v] : s.env)
        if (v.find('\n') != std::string::npos)
          return err("env." + k, "a container job's variables cannot hold a newline");
  }
  if (auto e = text("workdir", s.workdir, 4096)) return *e;
  if (!s.workdir.empty() && s.workdir.front() != '/') return err("workdir", fmt::format("'{}' must be an absolute path", s.workdir));
  if (auto e = text("user", s.user, 32)) return *e;
  for (char c : s.user)
    if (!name_char(c)) return err("user", fmt::format("'{}' is not a user name", s.user));

  if (auto* g = o.if_contains("gpus")) {
    if (g->is_string() && g->as_string() == "all") {
      s.gpus.all = true;
    } else if (g->is_int64() && g->as_int64() >= 0 && g->as_int64() <= 64) {
      s.gpus.count = static_cast<unsigned>(g->as_int64());
    } else if (g->is_uint64() && g->as_uint64() <= 64) {
      s.gpus.count = static_cast<unsigned>(g->as_uint64());
    } else {
      return err("gpus", fmt::format("'{}' is not 0, a count up to 64 or \"all\"", json::serialize(*g)));
    }
  }
  if (auto* c = o.if_contains("cpu_weight")) {
    if (!c->is_int64() || c->as_int64() < 1 || c->as_int64() > 10000)
      return err("cpu_weight", fmt::format("'{}' is not a whole number from 1 to 10000", json::serialize(*c)));
    s.cpu_weight = static_cast<int>(c->as_int64());
  }
  if (auto* t = o.if_contains("timeout"); t && !t->is_null()) {
    Duration d{};
    if (t->is_number()) {
      double secs = t->to_number<double>();
      if (!(secs > 0)) return err("timeout", "must be more than 0 seconds");
      // Rounded, not truncated: 2073.863 s must come back as 2073863 ms from a state file.
      d = std::chrono::round<Duration>(std::chrono::duration<double>(std::min(secs, 1e9)));
    } else if (t->is_string()) {
      auto p = parse_duration(t->as_string());
      if (!p) return err("timeout", p.error().message);
      d = *p;
    } else {
      return err("timeout", "must be seconds or a duration (\"90m\")");
    }
    if (d <= Duration::zero()) return err("timeout", "must be more than 0 seconds");
    if (d > config.max_timeout)
      return err("timeout", fmt::format("{} is longer than jobs.max_timeout ({})", format_duration(d), format_duration(config.max_timeout)));
    s.timeout = d;
  }
  if (auto* l = o.if_contains("labels")) {
    auto m = string_map(*l, w + "labels", false);
    if (!m) return m.error();
    s.labels = std::move(*m);
  }
  return s;
}

json::object JobSpec::to_json() const {
  json::object o{{"id", id}};
  if (!image.empty()) o["image"] = image;
  if (!image_archive.empty()) o["image_archive"] = image_archive;
  json::array cmd;
  for (const auto& a : command) cmd.emplace_back(a);
  o["command"] = std::move(cmd);
  if (!env.empty()) o["env"] = string_map_json(env);
  if (!workdir.empty()) o["workdir"] = workdir;
  if (!user.empty()) o["user"] = user;
  if (gpus.all)
    o["gpus"] = "all";
  else if (gpus.count)
    o["gpus"] = gpus.count;
  if (cpu_weight != 100) o["cpu_weight"] = cpu_weight;
  if (timeout) o["timeout"] = std::chrono::duration<double>(*timeout).count();
  if (!labels.empty()) o["labels"] = string_map_json(labels);
  return o;
}

json::object JobSpec::public_json() const {
  json::object o = to_json();
  if (o.contains("env")) {
    json::array names;
    for (const auto& [k, v] : env) names.emplace_back(k);
    o.erase("env");
    o["env_names"] = std::move(names);
  }
  return o;
}

namespace {

std::string time_text(Clock::wall_time t) { return t == Clock::wall_time{} ? std::string() : iso8601(t); }

void put_time(json::object& o, std::string_view key, Clock::wall_time t) {
  if (t != Clock::wall_time{}) o[key] = iso8601(t);
}

Clock::wall_time get_time(const json::object& o, std::string_view key) {
  auto* v = o.if_contains(key);
  if (!v || !v->is_string()) return {};
  return parse_iso8601(v->as_string()).value_or(Clock::wall_time{});
}

}  // namespace

std::string JobRecord::to_text() const {
  json::object o{{"version", 1}, {"spec", spec.to_json()}, {"seq", seq}, {"state", to_string(state)}};
  put_time(o, "submitted", submitted);
  put_time(o, "started", started);
  put_time(o, "ended", ended);
  if (exit_code) o["exit_code"] = *exit_code;
  if (signal) o["signal"] = signal;
  if (!reason.empty()) o["reason"] = reason;
  if (!gpus.empty()) {
    json::array g;
    for (unsigned i : gpus) g.emplace_back(i);
    o["gpus"] = std::move(g);
  }
  if (!container.empty()) o["container"] = container;
  if (!log.empty()) {
    o["log"] = log;
    o["layout"] = layout.to_json();
  }
  if (cancel_requested) o["cancel_requested"] = true;
  if (owner_uid) o["owner_uid"] = *owner_uid;
  return json::serialize(o);
}

Result<JobRecord> JobRecord::parse(std::string_view text) {
  try {
    return parse_record(text);
  } catch (const std::exception& e) {  // a number out of range (to_number) and the like
    return Error{fmt::format("not a job record: {}", e.what())};
  }
}

Result<JobRecord> JobRecord::parse_record(std::string_view text) {
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 16;
  auto v = json::parse(text, ec, {}, opt);
  if (ec) return Error{fmt::format("not valid JSON: {}", ec.message())};
  if (!v.is_object()) return Error{"not a JSON object"};
  const auto& o = v.as_object();
  auto* spec = o.if_contains("spec");
  if (!spec || !spec->is_object()) return Error{"spec: missing"};
  JobsConfig unlimited;
  unlimited.max_timeout = Duration::max();
  auto s = parse_job_spec(spec->as_object(), unlimited, "spec.");
  if (!s) return s.error();
  JobRecord r;
  r.spec = std::move(*s);
  auto* st = o.if_contains("state");
  auto state = st && st->is_string() ? parse_job_state(st->as_string()) : std::nullopt;
  if (!state) return Error{"state: missing or unknown"};
  r.state = *state;
  if (auto* q = o.if_contains("seq"); q && q->is_number()) r.seq = q->to_number<std::uint64_t>();
  r.submitted = get_time(o, "submitted");
  r.started = get_time(o, "started");
  r.ended = get_time(o, "ended");
  if (auto* e = o.if_contains("exit_code"); e && e->is_int64()) r.exit_code = static_cast<int>(e->as_int64());
  if (auto* e = o.if_contains("signal"); e && e->is_int64()) r.signal = static_cast<int>(e->as_int64());
  if (auto* e = o.if_contains("reason"); e && e->is_string()) r.reason = std::string(e->as_string());
  if (auto* e = o.if_contains("gpus"); e && e->is_array())
    for (const auto& g : e->as_array())
      if (g.is_number()) r.gpus.push_back(g.to_number<unsigned>());
  if (auto* e = o.if_contains("container"); e && e->is_string()) r.container = std::string(e->as_string());
  if (auto* e = o.if_contains("log"); e && e->is_string()) r.log = std::string(e->as_string());
  if (auto* e = o.if_contains("layout"); e && e->is_object()) r.layout = LogLayout::from_json(e->as_object());
  if (auto* e = o.if_contains("cancel_requested"); e && e->is_bool()) r.cancel_requested = e->as_bool();
  if (auto* e = o.if_contains("owner_uid"); e && e->is_number()) r.owner_uid = e->to_number<unsigned>();
  return r;
}

json::object JobRecord::to_json() const {
  json::object o = spec.public_json();
  o["state"] = to_string(state);
  o["submitted"] = time_text(submitted);
  put_time(o, "started", started);
  put_time(o, "ended", ended);
  if (started != Clock::wall_time{}) {
    auto end = ended != Clock::wall_time{} ? ended : Clock::wall_time{};
    if (end != Clock::wall_time{}) o["duration_seconds"] = std::chrono::duration<double>(end - started).count();
    o["waited_seconds"] = std::chrono::duration<double>(started - submitted).count();
  }
  if (exit_code) o["exit_code"] = *exit_code;
  if (signal) o["signal"] = signal;
  if (!reason.empty()) o["reason"] = reason;
  if (!gpus.empty() || state == JobState::running) {
    json::array g;
    for (unsigned i : gpus) g.emplace_back(i);
    o["assigned_gpus"] = std::move(g);
  }
  if (!container.empty()) o["container"] = container;
  if (!log.empty()) o["log"] = log;
  if (owner_uid) o["owner_uid"] = *owner_uid;
  return o;
}

}  // namespace instanced::jobs
