// set_config (docs/protocol.md, "Configuration from the control plane"): the control
// plane's settings as one managed drop-in, FILE.d/90-control-plane.yaml. The whole
// configuration with the new text is checked by the loader before anything is written
// (errors name the line of the sent text); it is applied by a reload and kept only if,
// control.set_config_confirm_after later, no subsystem is less healthy than just before
// the push. Otherwise the previous drop-in (or none) is put back and reloaded. One push at
// a time. What is being confirmed is recorded in state_dir/agent/set_config.json: a push
// under confirmation when the agent stops is judged after the next start, which is given
// the whole time again.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <filesystem>
#include <map>
#include <optional>
#include <string>

#include "agent/daemon/daemon.hpp"
#include "common/api.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced {

inline constexpr std::string_view kPushedDropin = "90-control-plane.yaml";

// FILE.d/90-control-plane.yaml beside the main configuration file.
std::filesystem::path pushed_dropin_path(const std::filesystem::path& main_file);

class ConfigPush final : public Subsystem {
 public:
  enum class Answer { ok, invalid, refused, failed };
  struct Outcome {
    Answer answer = Answer::ok;
    boost::json::object result;  // ok: config_hash, file, confirm_by
    std::string error;
  };

  ConfigPush(boost::asio::any_io_executor ex, Api& api, Daemon& daemon);
  std::string name() const override { return "config_push"; }
  // Judges the push under confirmation, if any, when its time is up.
  boost::asio::awaitable<void> run() override;
  // set_config's arguments: {"yaml": TEXT}; an empty text removes the drop-in.
  boost::asio::awaitable<Outcome> set(const boost::json::object& args);

 private:
  struct Pending {
    std::optional<std::string> previous;  // the drop-in before the push; none: there was none
    Clock::wall_time deadline;
    std::map<std::string, int> baseline;  // each subsystem's health (Health's order) before it
    std::string config_hash;              // the configuration the push made
  };

  boost::asio::awaitable<Outcome> apply(std::optional<std::string> text);
  boost::asio::awaitable<void> judge();
  boost::asio::awaitable<Result<void>> put_dropin(std::optional<std::string> text);
  std::vector<std::string> worse_than(const std::map<std::string, int>& baseline) const;
  Result<void> save_pending() const;
  void forget_pending();
  void resume_pending();
  std::filesystem::path pending_file() const;

  Api& api_;
  Daemon& daemon_;
  Logger log_;
  Wake pushed_;
  std::optional<Pending> pending_;
  bool busy_ = false;  // a set_config between its check and its reload
};

}  // namespace instanced
