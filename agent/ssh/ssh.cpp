#include "agent/ssh/ssh.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

#include "common/message_ids.hpp"
#include "common/wake.hpp"

namespace instanced::ssh {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

std::string_view policy_name(SshPolicy p) { return enum_name(p); }

// What `is-enabled` and `is-active` say when the unit is as the policy wants.
bool compliant(SshPolicy p, const std::string& file_state, const std::string& active) {
  // static, indirect, generated: the unit cannot be enabled further (it is started by
  // another unit, ssh.socket for one); running is what counts then.
  bool enabled = file_state == "enabled" || file_state == "enabled-runtime" || file_state == "alias" ||
                 file_state == "static" || file_state == "indirect" || file_state == "generated";
  bool running = active == "active" || active == "activating" || active == "reloading";
  if (p == SshPolicy::enabled) return enabled && running;
  if (p == SshPolicy::disabled) return !enabled && !running;
  return true;
}

}  // namespace

Ssh::Ssh(asio::any_io_executor ex, Api& api, ServiceManager& services, const SshConfig& config, std::string state_dir)
    : ex_(ex), api_(api), services_(services), config_(config), state_dir_(std::move(state_dir)),
      log_(api.logging.get("ssh")), policy_(config.policy), wake_(ex), enforcing_(ex) {
  load();
}

std::filesystem::path Ssh::state_file() const { return std::filesystem::path(state_dir_) / "ssh.json"; }

void Ssh::load() {
  auto text = api_.fs.read_file(state_file(), 16 << 10);
  if (!text) return;
  boost::system::error_code ec;
  auto v = json::parse(*text, ec);
  const json::value* p = !ec && v.is_object() ? v.as_object().if_contains("policy") : nullptr;
  auto policy = p && p->is_string() ? enum_from_name<SshPolicy>(p->as_string()) : std::nullopt;
  if (!policy) {
    log_->error("{}: not a policy the agent wrote; using ssh.policy from the config", state_file().string());
    std::error_code rec;
    std::filesystem::rename(state_file(), state_file().string() + ".bad", rec);
    return;
  }
  policy_ = *policy;
  source_ = "control plane";
}

void Ssh::reconfigure(const SshConfig& config) {
  if (config.unit != config_.unit) {
    compliant_seen_ = false;  // another unit: its first look is not drift
    ++generation_;
  }
  config_ = config;
  if (source_ == "config" && policy_ != config_.policy) {
    policy_ = config_.policy;
    compliant_seen_ = false;
    ++generation_;
  }
  wake_.pulse();
}

asio::awaitable<Result<json::object>> Ssh::set_policy(const json::object& args) {
  std::optional<SshPolicy> next;
  std::string source = "control plane";
  if (auto* r = args.if_contains("reset"); r && r->is_bool() && r->as_bool()) {
    next = config_.policy;
    source = "config";
  } else {
    auto* p = args.if_contains("policy");
    if (!p || !p->is_string()) co_return Error{"args.policy: missing or not a string (enabled, disabled or unmanaged)", ErrorKind::invalid};
    next = enum_from_name<SshPolicy>(p->as_string());
    if (!next)
      co_return Error{fmt::format("args.policy: '{}' is not one of enabled, disabled, unmanaged",
                                  std::string_view(p->as_string()).substr(0, 40)),
                      ErrorKind::invalid};
  }
  if (source == "config") {
    std::error_code ec;
    std::filesystem::remove(state_file(), ec);
  } else {
    json::object file{{"policy", policy_name(*next)}, {"set_at", iso8601(api_.clock.wall_now())}};
    if (auto w = api_.fs.write_file_atomic(state_file(), json::serialize(file), 0600); !w)
      co_return Error{fmt::format("could not keep the policy: {}", w.error().message)};
  }
  if (*next != policy_) {
    compliant_seen_ = false;
    ++generation_;
  }
  policy_ = *next;
  source_ = source;
  log_->info("SSH policy set to {} by the {}", policy_name(policy_), source_);
  co_await enforce();
  publish();
  wake_.pulse();  // the loop's next look follows the new policy's interval
  if (!error_.empty() && policy_ != SshPolicy::unmanaged) co_return Error{error_};
  co_return status_json();
}

asio::awaitable<void> Ssh::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  publish();
  for (;;) {
    co_await enforce();
    publish();
    // Unmanaged: nothing to look at until a reload or set_ssh_policy changes that.
    if (policy_ == SshPolicy::unmanaged)
      co_await wake_.wait();
    else
      co_await wake_.sleep_for(api_.clock, config_.interval);
  }
}

// One look at a time: the loop's and set_policy()'s would otherwise interleave.
asio::awaitable<void> Ssh::enforce() {
  auto turn = co_await enforcing_.acquire();
  co_await enforce_once();
}

asio::awaitable<void> Ssh::enforce_once() {
  const std::string unit = config_.unit;
  const SshPolicy want = policy_;
  const std::uint64_t generation = generation_;
  // The policy or unit changed while systemctl answered: this look is void.
  auto stale = [&] { return generation != generation_; };
  if (want == SshPolicy::unmanaged) {
    // Left alone: not even looked at (a machine without systemd has nothing to say).
    looked_ = true;
    error_.clear();
    unit_state_.clear();
    active_state_.clear();
    co_return;
  }
  auto file_state = co_await services_.unit_file_state(unit);
  auto active = co_await services_.active_state(unit);
  if (stale()) co_return;
  looked_ = true;
  if (!file_state || !active) {
    std::string e = !file_state ? file_state.error().message : active.error().message;
    if (e != error_) log_->error("SSH policy: cannot look at {}: {}", unit, e);
    error_ = e;
    co_return;
  }
  unit_state_ = *file_state;
  active_state_ = *active;
  error_.clear();
  if (want == SshPolicy::unmanaged) co_return;
  if (compliant(want, unit_state_, active_state_)) {
    if (!compliant_seen_) {
      compliant_seen_ = true;
      applied_at_ = api_.clock.wall_now();
    }
    co_return;
  }
  std::string seen = fmt::format("{} is {} and {}", unit, unit_state_, active_state_);
  if (compliant_seen_) {
    ++drifts_;
    last_drift_ = api_.clock.wall_now();
    std::string msg = fmt::format("SSH policy drift: {} (changed by hand?); the policy is {}: applying it again", seen,
                                  policy_name(want));
    {
      LogFields fields{{"MESSAGE_ID", msgid::kSshDrift}, {"INSTANCED_UNIT", unit}};
      log_->warn("{}", msg);
    }
    api_.state.emit("ssh", "ssh_drift", msg,
                    {{"unit", unit}, {"policy", policy_name(want)}, {"unit_file_state", unit_state_}, {"active_state", active_state_}});
    api_.state.metrics().add_counter("instanced_ssh_drift_total", "Times the SSH unit was found changed against the policy.", {});
    compliant_seen_ = false;  // one report per change, also when applying it again fails
  }
  Result<void> r;
  if (want == SshPolicy::enabled)
    r = co_await services_.enable_now(unit);
  else
    r = co_await services_.disable_now(unit);
  if (stale()) co_return;
  if (!r) {
    error_ = r.error().message;
    log_->error("SSH policy {}: {}", policy_name(want), error_);
    api_.state.emit("ssh", "ssh_policy_failed", fmt::format("applying SSH policy {}: {}", policy_name(want), error_),
                    {{"unit", unit}, {"policy", policy_name(want)}});
    co_return;
  }
  // Look again: the answer is what the unit is now, not what was asked for.
  auto after_file = co_await services_.unit_file_state(unit);
  auto after_active = co_await services_.active_state(unit);
  if (stale()) co_return;
  if (after_file) unit_state_ = *after_file;
  if (after_active) active_state_ = *after_active;
  if (!compliant(want, unit_state_, active_state_)) {
    error_ = fmt::format("after systemctl {} --now {}: {} is {} and {}", want == SshPolicy::enabled ? "enable" : "disable",
                         unit, unit, unit_state_, active_state_);
    log_->error("SSH policy {}: {}", policy_name(want), error_);
    co_return;
  }
  compliant_seen_ = true;
  applied_at_ = api_.clock.wall_now();
  log_->info("SSH policy {} applied: {} is {} and {}", policy_name(want), unit, unit_state_, active_state_);
  api_.state.emit("ssh", "ssh_policy_applied", fmt::format("SSH {}: {} is {} and {}", policy_name(want), unit, unit_state_, active_state_),
                  {{"unit", unit}, {"policy", policy_name(want)}});
}

json::object Ssh::status_json() const {
  json::object o{{"policy", policy_name(policy_)}, {"source", source_}, {"unit", config_.unit}};
  if (!unit_state_.empty()) o["unit_file_state"] = unit_state_;
  if (!active_state_.empty()) o["active_state"] = active_state_;
  if (policy_ != SshPolicy::unmanaged && looked_ && error_.empty())
    o["compliant"] = compliant(policy_, unit_state_, active_state_);
  o["drifts"] = drifts_;
  if (last_drift_) o["last_drift"] = iso8601(*last_drift_);
  if (applied_at_) o["applied_at"] = iso8601(*applied_at_);
  if (!error_.empty()) o["error"] = error_;
  return o;
}

void Ssh::publish() {
  Health h = Health::ok;
  std::string summary;
  if (!looked_) {
    h = Health::starting;
    summary = fmt::format("policy {}: looking at {}", policy_name(policy_), config_.unit);
  } else if (policy_ == SshPolicy::unmanaged) {
    summary = fmt::format("policy unmanaged ({}): {} is left as it is", source_, config_.unit);
  } else if (!error_.empty()) {
    h = Health::degraded;
    summary = fmt::format("policy {}: {}", policy_name(policy_), error_);
  } else {
    summary = fmt::format("policy {} ({}): {} is {} and {}", policy_name(policy_), source_, config_.unit, unit_state_,
                          active_state_);
    if (drifts_ > 0) summary += fmt::format("; drift undone {} times, last {}", drifts_, iso8601(*last_drift_));
  }
  api_.state.publish("ssh", h, summary, status_json());
  api_.state.metrics().set_gauge("instanced_ssh_enabled", "1 when the SSH unit is running.", {},
                                 active_state_ == "active" ? 1 : 0);
}

void Ssh::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/ssh", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
}

}  // namespace instanced::ssh
