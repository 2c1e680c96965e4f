// Self-update with rollback (docs/update.md). update_agent {version, url, sha256,
// signature} is checked (an Ed25519 signature by a key in update.public_keys over the
// version and the SHA-256, before anything is downloaded), the package downloaded over
// https through the proxy and checked (its SHA-256, its name and version), and handed to
// the installer: lib/instanced/instanced-update, run under a monitor as a transient unit of
// its own, so that the agent's restart does not stop it. The installer keeps the running
// package, installs the new one, and waits for the new agent to say it is READY,
// connected and no less healthy than the old one was; if it does not within
// update.confirm_within, the installer puts the previous package back. The attempt is
// recorded in state_dir/update: update.json (this agent's record), and `state` and
// `reason` (the installer's words, which the new agent adds `confirmed` to, under `lock`).
// Whichever agent runs when the installer ends reports the outcome, once:
// update_succeeded or update_failed.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include "agent/control/commands.hpp"
#include "agent/monitor/client.hpp"
#include "agent/status/router.hpp"
#include "agent/status/views.hpp"
#include "agent/update/config.hpp"
#include "common/api.hpp"
#include "common/process.hpp"
#include "common/proxy_config.hpp"
#include "common/subsystem.hpp"
#include "common/url.hpp"
#include "common/wake.hpp"

namespace instanced::update {

// The installer beside the agent: /usr/sbin/instanced → /usr/lib/instanced/instanced-update.
std::string default_installer();

// One attempt, as recorded.
struct Attempt {
  std::string id;
  std::string from, to;  // the versions
  std::string url;       // without its query
  std::string sha256;
  std::string started, confirm_by;  // ISO 8601
  std::map<std::string, int> baseline;  // each subsystem's health (Health's order) before it
  bool reported = false;  // its outcome went out as an event
  int launches = 0;       // the installer's starts (again after a reboot)
  // The installer's words (`state` and `reason`): installing, confirmed, rolling_back,
  // rolled_back, failed; refused (by this agent, nothing downloaded or installed).
  std::string state;
  std::string reason;

  boost::json::object to_json() const;
};

class Update final : public Subsystem {
 public:
  // Why work is held back now (the disk rule), if it is.
  using Refusal = std::function<std::optional<std::string>()>;
  Update(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, monitor::Launcher launcher,
         const UpdateConfig& config, const ProxyConfig& proxy, std::string state_dir, const status::AgentInfo& info,
         Refusal refusal);
  std::string name() const override { return "update"; }
  // Takes back an attempt an earlier agent left, follows the installer to its end.
  boost::asio::awaitable<void> run() override;
  void reconfigure(const UpdateConfig& config, const ProxyConfig& proxy);
  void add_routes(status::Router& router);
  void add_commands(control::CommandRegistry& commands);

  // update_agent: answered once the installer runs, or why not.
  boost::asio::awaitable<control::CommandResult> start(boost::json::object args);
  // The last attempt (GET /v1/update): {"attempt": {...}} or {"attempt": null}.
  boost::json::object status_json() const;

 private:
  struct Request {
    std::string version, sha256, signature;
    Url url;
  };
  Result<Request> parse(const boost::json::object& args) const;
  std::optional<std::string> refused(const Request& r) const;
  boost::asio::awaitable<Result<void>> fetch_and_check(const Request& r, std::string& refusal);
  boost::asio::awaitable<Result<void>> launch();
  boost::asio::awaitable<void> take_back();
  boost::asio::awaitable<void> follow();
  boost::asio::awaitable<void> confirm_if_healthy();
  boost::asio::awaitable<void> confirm_until_ended();
  void report();
  // Records an attempt that installed nothing: `state` refused, or failed (the download).
  void refuse(const Request& r, std::string why, std::string state = "refused");
  std::vector<std::string> waiting_for() const;
  Result<void> save();
  void load();
  void publish();
  std::filesystem::path dir() const;

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  monitor::Launcher launcher_;
  UpdateConfig config_;
  ProxyConfig proxy_;
  std::string state_dir_;
  const status::AgentInfo& info_;
  Refusal refusal_;
  Logger log_;
  Wake launched_;
  std::optional<Attempt> attempt_;
  std::optional<monitor::Run> run_;  // the installer, while it runs
  bool busy_ = false;                // an update_agent between its checks and the installer's start
  std::string said_waiting_;         // what the new agent last wrote to `waiting_for`
};

}  // namespace instanced::update
