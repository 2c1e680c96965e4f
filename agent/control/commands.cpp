#include "agent/control/commands.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/wake.hpp"
#include "common/coro.hpp"

namespace instanced::control {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {
constexpr auto kRemember = std::chrono::hours(24);
constexpr const char* kStarted = "started";  // in the file: the handler ran, no result yet

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
  out.reserve(handlers_.size());
  for (const auto& [n, h] : handlers_) out.push_back(n);
  return out;
}

// The command that runs under an id; duplicates wait on `done` for its result.
struct CommandRegistry::Running {
  explicit Running(asio::any_io_executor ex) : done(std::move(ex)) {}
  Wake done;  // pulsed when it ends
  std::optional<CommandResult> result;  // none when it was cancelled
};

Result<std::vector<std::string>> CommandRegistry::load() {
  std::vector<std::string> interrupted;
  auto text = fs_.read_file(state_file_, 64 << 20);
  if (!text) return interrupted;  // first start
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
    if (status->as_string() == kStarted) {
      r = {Status::interrupted, {}, "the agent stopped while it ran (a restart or a crash); it was not run again"};
      interrupted.emplace_back(id);
    } else {
      r.status = status_of(status->as_string()).value_or(Status::failed);
      if (auto* res = o.if_contains("result"); res && res->is_object()) r.result = res->as_object();
      if (auto* err = o.if_contains("error"); err && err->is_string()) r.error = std::string(err->as_string());
    }
    done_[std::string(id)] = {t, std::string(name->as_string()), std::move(r)};
  }
  if (!interrupted.empty()) (void)save();
  return interrupted;
}

std::optional<std::pair<std::string, CommandResult>> CommandRegistry::stored(const std::string& id) const {
  auto it = done_.find(id);
  if (it == done_.end() || !it->second.result) return std::nullopt;
  return std::make_pair(it->second.name, *it->second.result);
}

Result<void> CommandRegistry::save() {
  json::object all;
  for (const auto& [id, d] : done_) {
    json::object o;
    o["at"] = std::chrono::duration_cast<std::chrono::milliseconds>(d.at.time_since_epoch()).count();
    o["name"] = d.name;
    if (!d.result) {
      o["status"] = kStarted;
    } else {
      o["status"] = std::string(to_string(d.result->status));
      if (!d.result->result.empty()) o["result"] = d.result->result;
      if (!d.result->error.empty()) o["error"] = d.result->error;
    }
    all[id] = std::move(o);
  }
  return fs_.write_file_atomic(state_file_, json::serialize(all), 0600);
}

// `r` none: the command starts. Failing to write is not fatal: the command is known in
// this process; only a crash before the next successful write could forget it.
void CommandRegistry::remember(const Command& c, std::optional<CommandResult> r) {
  const auto now = clock_.wall_now();
  std::erase_if(done_, [&](const auto& kv) { return now - kv.second.at > kRemember; });
  done_[c.id] = {now, c.name, std::move(r)};
  (void)save();
}

asio::awaitable<CommandResult> CommandRegistry::execute(const Command& command) {
  if (auto it = done_.find(command.id); it != done_.end() && it->second.result) co_return *it->second.result;
  if (auto it = running_.find(command.id); it != running_.end()) {
    // A duplicate while the first runs: its result, when it is ready.
    auto running = it->second;
    co_await running->done.wait();
    if (!running->result) throw boost::system::system_error(asio::error::operation_aborted);
    co_return *running->result;
  }
  CommandResult r = refusal_before_start(command);
  if (r.status != Status::ok) {
    remember(command, r);
    co_return r;
  }
  auto running = std::make_shared<Running>(co_await asio::this_coro::executor);
  running_[command.id] = running;
  remember(command, std::nullopt);  // on disk as started before the handler runs
  auto ended = [&] {
    running_.erase(command.id);
    running->done.pulse();
  };
  try {
    r = co_await handlers_.at(command.name)(command.args);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) {
      ended();  // stays "started": the next start answers it interrupted
      throw;
    }
    r = {Status::failed, {}, e.what()};
  } catch (const std::exception& e) {
    r = {Status::failed, {}, e.what()};
  }
  remember(command, r);
  running->result = r;
  ended();
  co_return r;
}

// What is answered without running the handler: a bad or passed deadline, an unknown name.
CommandResult CommandRegistry::refusal_before_start(const Command& command) const {
  if (command.deadline) {
    auto deadline = parse_iso8601(*command.deadline);
    if (!deadline) return {Status::invalid, {}, "deadline: not an RFC 3339 UTC time such as 2026-11-27T12:00:00Z"};
    if (clock_.wall_now() > *deadline)
      return {Status::expired, {}, fmt::format("deadline {} passed before the command could start", *command.deadline)};
  }
  if (!handlers_.contains(command.name)) return {Status::unsupported, {}, fmt::format("unknown command '{}'", command.name)};
  return {};
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
