#include "agent/daemon/run_record.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cstdlib>
#include <fmt/format.h>
#include <unistd.h>

namespace instanced {

namespace json = boost::json;

namespace {
constexpr std::size_t kMaxRecord = 64 << 10;

std::string field(const json::object& o, const char* key) {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// "killed by signal KILL (systemd: signal)", "exit status 1 (systemd: exit-code)", or "".
std::string how_it_ended(const json::object& exit) {
  const std::string result = field(exit, "service_result"), code = field(exit, "exit_code"),
                    status = field(exit, "exit_status");
  std::string what;
  if (code == "exited") what = "exit status " + status;
  else if (code == "killed" || code == "dumped") what = fmt::format("killed by signal {}{}", status, code == "dumped" ? " (core dumped)" : "");
  else if (!code.empty()) what = code + (status.empty() ? "" : " " + status);
  if (!result.empty()) what += (what.empty() ? "" : " ") + fmt::format("(systemd: {})", result);
  return what;
}
}  // namespace

std::filesystem::path run_record_path(const std::string& state_dir) {
  return std::filesystem::path(state_dir) / "agent" / "run.json";
}

json::object run_record(const std::string& version, const std::string& started_at, const std::string& boot_id) {
  return {{"pid", static_cast<std::int64_t>(::getpid())}, {"version", version}, {"started_at", started_at},
          {"boot_id", boot_id}};
}

std::optional<PreviousRun> previous_unclean_run(Filesystem& fs, const std::filesystem::path& record,
                                                const std::string& boot_id) {
  auto text = fs.read_file(record, kMaxRecord);
  if (!text) return std::nullopt;  // none: the first start, or the last stop was clean
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  json::object prev = !ec && v.is_object() ? v.as_object() : json::object{};
  if (auto* clean = prev.if_contains("clean"); clean && clean->is_bool() && clean->as_bool()) return std::nullopt;
  json::object data{{"pid", prev.contains("pid") ? prev.at("pid") : json::value()},
                    {"version", field(prev, "version")},
                    {"started_at", field(prev, "started_at")}};
  std::string how;
  if (auto* exit = prev.if_contains("exit"); exit && exit->is_object()) {
    how = how_it_ended(exit->as_object());
    data["exit"] = exit->as_object();
  }
  const bool rebooted = !field(prev, "boot_id").empty() && field(prev, "boot_id") != boot_id;
  data["rebooted"] = rebooted;
  if (how.empty())
    how = rebooted ? "the machine restarted while it ran (power loss or a hard reset?)"
                   : "no account of its end (killed outside systemd, or systemd too could not say)";
  data["how"] = how;
  std::string message = fmt::format("the previous run (pid {}, version {}, started {}) did not stop cleanly: {}",
                                    json::serialize(data.at("pid")), field(prev, "version"), field(prev, "started_at"),
                                    how);
  return PreviousRun{std::move(message), std::move(data)};
}

json::object clean_stop_record(const json::object& run, const std::string& stopped_at) {
  json::object o = run;
  o["clean"] = true;
  o["stopped_at"] = stopped_at;
  return o;
}

int record_exit(Filesystem& fs, const std::filesystem::path& record) {
  auto text = fs.read_file(record, kMaxRecord);
  if (!text) return 0;  // no run recorded: nothing to add
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  json::object o = !ec && v.is_object() ? v.as_object() : json::object{};
  if (auto* clean = o.if_contains("clean"); clean && clean->is_bool() && clean->as_bool()) return 0;
  json::object exit;
  for (auto [key, env] : {std::pair{"service_result", "SERVICE_RESULT"}, std::pair{"exit_code", "EXIT_CODE"},
                          std::pair{"exit_status", "EXIT_STATUS"}})
    if (const char* value = std::getenv(env); value && *value) exit[key] = std::string(value).substr(0, 64);
  o["exit"] = std::move(exit);
  return fs.write_file_atomic(record, json::serialize(o), 0644) ? 0 : 1;
}

}  // namespace instanced
