#include "agent/control/commands.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace instanced::control {
namespace json = boost::json;

namespace {
constexpr auto kRemember = std::chrono::hours(24);

std::optional<Status> status_of(std::string_view s) {
  for (auto st : {Status::ok, Status::failed, Status::refused, Status::invalid, Status::unsupported, Status::expired})
    if (to_string(st) == s) return st;
  return std::nullopt;
}
}  // namespace

CommandRegistry::CommandRegistry(Clock& clock, Filesystem& fs, std::filesystem::path state_file)
    : clock_(clock), fs_(fs), state_file_(std::move(state_file)) {}

void CommandRegistry::add(std::string name, Handler handler) { handlers_[std::move(name)] = std::move(handler); }

void CommandRegistry::add_veto(std::string subsystem, Veto veto) { vetoes_.emplace_back(std::move(subsystem), std::move(veto)); }

std::vector<std::string> CommandRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, h] : handlers_) out.push_back(n);
  return out;
}

Result<void> CommandRegistry::load() {
  auto text = fs_.read_file(state_file_, 64 << 20);
  if (!text) return {};  // first start
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  if (ec || !v.is_object()) return Error{fmt::format("{}: not valid JSON, ignoring remembered commands", state_file_.string())};
  const auto now = clock_.wall_now();
  for (const auto& [id, e] : v.as_object()) {
    if (!e.is_object()) continue;
    const auto& o = e.as_object();
    auto at = o.if_contains("at");
    auto name = o.if_contains("name");
    auto status = o.if_contains("status");
    if (!at || !at->is_int64() || !name || !name->is_string() || !status || !status->is_string()) continue;
    Clock::wall_time t{std::chrono::milliseconds(at->as_int64())};
    if (now - t > kRemember) continue;
    CommandResult r;
    r.status = status_of(status->as_string()).value_or(Status::failed);
    if (auto* res = o.if_contains("result"); res && res->is_object()) r.result = res->as_object();
    if (auto* err = o.if_contains("error"); err && err->is_string()) r.error = std::string(err->as_string());
    done_[std::string(id)] = {t, std::string(name->as_string()), std::move(r)};
  }
  return {};
}

void CommandRegistry::remember(const Command& c, const CommandResult& r) {
  const auto now = clock_.wall_now();
  std::erase_if(done_, [&](const auto& kv) { return now - kv.second.at > kRemember; });
  done_[c.id] = {now, c.name, r};
  json::object all;
  for (const auto& [id, d] : done_) {
    json::object o;
    o["at"] = std::chrono::duration_cast<std::chrono::milliseconds>(d.at.time_since_epoch()).count();
    o["name"] = d.name;
    o["status"] = std::string(to_string(d.result.status));
    if (!d.result.result.empty()) o["result"] = d.result.result;
    if (!d.result.error.empty()) o["error"] = d.result.error;
    all[id] = std::move(o);
  }
  // Failing to remember is not fatal: the command ran; a duplicate could run it again.
  (void)fs_.write_file_atomic(state_file_, json::serialize(all), 0600);
}

boost::asio::awaitable<CommandResult> CommandRegistry::execute(const Command& command) {
  if (auto it = done_.find(command.id); it != done_.end()) co_return it->second.result;
  CommandResult r;
  if (command.deadline) {
    auto deadline = parse_iso8601(*command.deadline);
    if (!deadline) {
      r = {Status::invalid, {}, "deadline: not an RFC 3339 UTC time such as 2026-11-27T12:00:00Z"};
    } else if (clock_.wall_now() > *deadline) {
      r = {Status::expired, {}, fmt::format("deadline {} passed before the command could start", *command.deadline)};
    }
  }
  if (r.status == Status::ok) {
    auto h = handlers_.find(command.name);
    if (h == handlers_.end()) {
      r = {Status::unsupported, {}, fmt::format("unknown command '{}'", command.name)};
    } else {
      try {
        r = co_await h->second(command.args);
      } catch (const std::exception& e) {
        r = {Status::failed, {}, e.what()};
      }
    }
  }
  remember(command, r);
  co_return r;
}

void CommandRegistry::add_drain(std::string subsystem, Drain drain) {
  drains_.emplace_back(std::move(subsystem), std::move(drain));
}

boost::asio::awaitable<CommandResult> CommandRegistry::prepare(std::string action) {
  for (const auto& [subsystem, veto] : vetoes_)
    if (auto reason = veto(action))
      co_return CommandResult{Status::refused, {{"subsystem", subsystem}}, fmt::format("{}: {}", subsystem, *reason)};
  boost::json::object drained;
  for (std::size_t i = 0; i < drains_.size(); ++i) {
    const std::string subsystem = drains_[i].first;
    Drain& drain = drains_[i].second;
    auto done = co_await drain(action);
    if (!done)
      co_return CommandResult{Status::refused, {{"subsystem", subsystem}, {"drained", drained}},
                              fmt::format("{}: {}", subsystem, done.error().message)};
    drained[subsystem] = *done;
  }
  co_return CommandResult{Status::ok, {{"action", action}, {"drained", std::move(drained)}}, {}};
}

}  // namespace instanced::control
