#include "agent/daemon/config_push.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>

#include "common/config_yaml.hpp"

namespace instanced {
namespace asio = boost::asio;
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {
constexpr std::size_t kMaxPushBytes = 256 << 10;
constexpr std::size_t kMaxPendingBytes = 1 << 20;
constexpr auto kFileTimeout = std::chrono::seconds(30);  // reading or writing under /etc, off the loop

json::object health_map(const std::map<std::string, int>& m) {
  json::object o;
  for (const auto& [name, h] : m) o[name] = h;
  return o;
}
}  // namespace

fs::path pushed_dropin_path(const fs::path& main_file) {
  fs::path dir = main_file;
  dir += ".d";
  return dir / kPushedDropin;
}

ConfigPush::ConfigPush(asio::any_io_executor ex, Api& api, Daemon& daemon)
    : api_(api), daemon_(daemon), log_(api.logging.get("config")), pushed_(std::move(ex)) {}

fs::path ConfigPush::pending_file() const { return fs::path(daemon_.config().state_dir) / "agent/set_config.json"; }

asio::awaitable<void> ConfigPush::run() {
  resume_pending();
  for (;;) {
    while (!pending_) co_await pushed_.wait();
    const auto left = std::chrono::duration_cast<Clock::steady_time::duration>(pending_->deadline - api_.clock.wall_now());
    co_await api_.clock.sleep_until(api_.clock.now() + std::max(left, Clock::steady_time::duration::zero()));
    co_await judge();
  }
}

// A push the last run left under confirmation: judged after this run has had the whole time.
void ConfigPush::resume_pending() {
  auto text = api_.fs.read_file(pending_file(), kMaxPendingBytes);
  if (!text) return;  // none
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  const json::object* o = !ec && v.is_object() ? &v.as_object() : nullptr;
  const json::value* prev = o ? o->if_contains("previous") : nullptr;
  const json::value* base = o ? o->if_contains("baseline") : nullptr;
  const json::value* hash = o ? o->if_contains("config_hash") : nullptr;
  if (!prev || !(prev->is_null() || prev->is_string()) || !base || !base->is_object() || !hash || !hash->is_string()) {
    log_->warn("{}: not a set_config record; the pushed drop-in is kept as it is", pending_file().string());
    forget_pending();
    return;
  }
  Pending p;
  if (prev->is_string()) p.previous = std::string(prev->as_string());
  for (const auto& [name, h] : base->as_object())
    if (h.is_int64()) p.baseline[std::string(name)] = static_cast<int>(h.as_int64());
  p.config_hash = std::string(hash->as_string());
  p.deadline = api_.clock.wall_now() + daemon_.config().control.set_config_confirm_after;
  log_->info("the pushed configuration is confirmed or taken back at {} (the agent restarted meanwhile)",
             iso8601(p.deadline));
  pending_ = std::move(p);
}

asio::awaitable<ConfigPush::Outcome> ConfigPush::set(const json::object& args) {
  const auto& control = daemon_.config().control;
  if (!control.allow_set_config)
    co_return Outcome{Answer::refused, {}, "control.allow_set_config is false on this instance"};
  if (busy_) co_return Outcome{Answer::refused, {}, "another set_config is being applied; one push at a time"};
  if (pending_)
    co_return Outcome{Answer::refused, {},
                      fmt::format("the last pushed configuration is confirmed or taken back at {}; one push at a time",
                                  iso8601(pending_->deadline))};
  const json::value* yaml = args.if_contains("yaml");
  if (!yaml || !yaml->is_string())
    co_return Outcome{Answer::invalid, {}, "args.yaml: a string is required (the drop-in's YAML; empty removes it)"};
  if (yaml->as_string().size() > kMaxPushBytes)
    co_return Outcome{Answer::invalid, {}, fmt::format("args.yaml: {} bytes; at most {}", yaml->as_string().size(), kMaxPushBytes)};
  std::optional<std::string> text;
  if (!yaml->as_string().empty()) text = std::string(yaml->as_string());
  busy_ = true;
  auto outcome = co_await apply(std::move(text));
  busy_ = false;
  if (outcome.answer == Answer::ok) pushed_.pulse();
  co_return outcome;
}

// Checks the whole configuration with `text` as the managed drop-in, records what a
// rollback needs, writes it and reloads.
asio::awaitable<ConfigPush::Outcome> ConfigPush::apply(std::optional<std::string> text) {
  const auto& control = daemon_.config().control;

  const fs::path file = daemon_.loaded().file, path = pushed_dropin_path(file);
  struct Checked {
    std::optional<std::string> previous;
    std::string hash;
  };
  auto check = [file, path, text]() -> Result<Checked> {
    Checked c;
    std::error_code ec;
    if (fs::exists(path, ec)) {
      auto prev = read_regular_file(path, kMaxPushBytes * 4);
      if (!prev) return Error{"cannot keep the drop-in in place for a rollback: " + prev.error().message};
      c.previous = std::move(*prev);
    }
    const config_yaml::ReplacedDropin replaced{path, text};
    auto loaded = load_config(file, &replaced);
    if (!loaded) return loaded.error();
    // Who may sign the agent's packages, and what installs them, stay the site's to say:
    // a control plane able to set them could install any package.
    for (const auto& [key, origin] : loaded->origins)
      if (key.starts_with("update.") && origin == path)
        return Error{fmt::format("{}: {}: not settable from the control plane (self-update's keys and installer stay "
                                 "in the local files)",
                                 path.string(), key)};
    c.hash = loaded->hash;
    return c;
  };
  const std::string what = "checking the pushed configuration";
  auto checked = co_await api_.pool.run(what, kFileTimeout, check);
  if (!checked) co_return Outcome{Answer::invalid, {}, checked.error().message};

  Pending p{checked->previous, api_.clock.wall_now() + control.set_config_confirm_after, {}, checked->hash};
  for (const auto& [name, s] : api_.state.subsystems()) p.baseline[name] = static_cast<int>(s.health);
  pending_ = std::move(p);
  if (auto saved = save_pending(); !saved) {
    pending_.reset();
    co_return Outcome{Answer::failed, {}, "cannot record the push for its rollback: " + saved.error().message};
  }
  if (auto put = co_await put_dropin(text); !put) {
    forget_pending();
    co_return Outcome{Answer::failed, {}, put.error().message};
  }
  co_await daemon_.reload();
  if (daemon_.loaded().hash != pending_->config_hash) {  // the files changed meanwhile
    const std::string why = "the reload after writing it did not load it";
    (void)co_await put_dropin(pending_->previous);
    co_await daemon_.reload();
    forget_pending();
    co_return Outcome{Answer::failed, {}, why + "; the previous drop-in is back"};
  }
  log_->info("set_config: {} {}; confirmed or taken back at {}", text ? "wrote" : "removed", path.string(),
             iso8601(pending_->deadline));
  co_return Outcome{Answer::ok,
                    {{"config_hash", pending_->config_hash},
                     {"file", path.string()},
                     {"confirm_by", iso8601(pending_->deadline)}},
                    {}};
}

// Writes the managed drop-in (none: removes it), off the loop.
asio::awaitable<Result<void>> ConfigPush::put_dropin(std::optional<std::string> text) {
  const fs::path path = pushed_dropin_path(daemon_.loaded().file);
  Filesystem& files = api_.fs;
  auto put = [&files, path, text]() -> Result<void> {
    if (!text) {
      std::error_code ec;
      fs::remove(path, ec);
      if (ec) return Error{fmt::format("cannot remove {}: {}", path.string(), ec.message())};
      return {};
    }
    if (auto r = files.create_directories(path.parent_path(), 0755); !r) return r;
    return files.write_file_atomic(path, *text, 0600);
  };
  const std::string what = "writing the pushed configuration";
  co_return co_await api_.pool.run(what, kFileTimeout, put);
}

// Each subsystem whose health is worse now than in `baseline` (one absent then counts as ok).
std::vector<std::string> ConfigPush::worse_than(const std::map<std::string, int>& baseline) const {
  std::vector<std::string> worse;
  for (const auto& [name, s] : api_.state.subsystems()) {
    auto before = baseline.find(name);
    if (static_cast<int>(s.health) > (before == baseline.end() ? 0 : before->second))
      worse.push_back(fmt::format("{}: {} ({})", name, s.summary, to_string(s.health)));
  }
  return worse;
}

asio::awaitable<void> ConfigPush::judge() {
  const auto worse = worse_than(pending_->baseline);
  if (worse.empty()) {
    log_->info("set_config: the pushed configuration (hash {}) is confirmed", pending_->config_hash.substr(0, 12));
    api_.state.emit("config", "set_config_confirmed", "the pushed configuration is kept",
                    {{"config_hash", pending_->config_hash}});
    forget_pending();
    co_return;
  }
  const std::string why = fmt::format("less healthy than before the push: {}", fmt::join(worse, "; "));
  log_->warn("set_config: taking the pushed configuration back: {}", why);
  auto put = co_await put_dropin(pending_->previous);
  if (put) co_await daemon_.reload();
  const std::string message =
      put ? "the pushed configuration was taken back, " + why : "cannot take the pushed configuration back: " + put.error().message;
  api_.state.emit("config", "set_config_rolled_back", message,
                  {{"config_hash", pending_->config_hash}, {"now", daemon_.loaded().hash}});
  forget_pending();
}

Result<void> ConfigPush::save_pending() const {
  json::object o{{"previous", pending_->previous ? json::value(*pending_->previous) : json::value(nullptr)},
                 {"deadline", iso8601(pending_->deadline)},
                 {"baseline", health_map(pending_->baseline)},
                 {"config_hash", pending_->config_hash}};
  if (auto r = api_.fs.create_directories(pending_file().parent_path(), 0700); !r) return r;
  return api_.fs.write_file_atomic(pending_file(), json::serialize(o), 0600);
}

void ConfigPush::forget_pending() {
  pending_.reset();
  std::error_code ec;
  fs::remove(pending_file(), ec);
}

}  // namespace instanced
