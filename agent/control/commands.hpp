// The command registry: subsystems add the commands they answer; the channel executes
// what the control plane sends. A command id runs at most once: it is recorded as started
// (in state_dir) before its handler runs, its result is remembered for 24 h, and a
// duplicate gets the stored result, or, while the first is still running, its result
// when it is ready. A command that had started when the agent stopped or crashed is
// answered `interrupted` from then on, never run again. Commands past their deadline are
// not started.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/control/protocol.hpp"
#include "common/clock.hpp"
#include "common/fs.hpp"

namespace instanced::control {

class CommandRegistry {
 public:
  using Handler = std::function<boost::asio::awaitable<CommandResult>(const boost::json::object& args)>;
  // A subsystem's say on stopping or restarting the VM: a reason to refuse, or nothing.
  using Veto = std::function<std::optional<std::string>(std::string_view action)>;
  // A subsystem's work before the VM stops or restarts (finish, flush, unmount): what it
  // did, for the result, or an error that refuses the action.
  using Drain = std::function<boost::asio::awaitable<Result<std::string>>(std::string action)>;

  CommandRegistry(Clock& clock, Filesystem& fs, std::filesystem::path state_file);

  void add(std::string name, Handler handler);
  void add_veto(std::string subsystem, Veto veto);
  void add_drain(std::string subsystem, Drain drain);
  std::vector<std::string> names() const;

  // Reads the remembered results (missing file: none). Call once at start. Commands that
  // had started and not ended are now `interrupted`: their ids are returned, to be reported.
  Result<std::vector<std::string>> load();
  // Runs a command (once per id, see above). Throws operation_aborted when cancelled
  // (the agent is stopping): the command stays recorded as started.
  boost::asio::awaitable<CommandResult> execute(const Command& command);
  // The stored result of a command id, if any.
  std::optional<std::pair<std::string, CommandResult>> stored(const std::string& id) const;
  // prepare_stop / prepare_restart: every veto is asked (the first reason refuses), then
  // every drain runs, in the order added (the first error refuses); `ok` lists what each
  // drain did.
  boost::asio::awaitable<CommandResult> prepare(std::string action);

  std::size_t remembered() const { return done_.size(); }

 private:
  struct Done {
    Clock::wall_time at;
    std::string name;
    std::optional<CommandResult> result;  // none: started, not ended
  };
  struct Running;
  void remember(const Command& c, std::optional<CommandResult> r);
  CommandResult refusal_before_start(const Command& command) const;
  Result<void> save();

  Clock& clock_;
  Filesystem& fs_;
  std::filesystem::path state_file_;
  std::map<std::string, Handler> handlers_;
  std::vector<std::pair<std::string, Veto>> vetoes_;
  std::vector<std::pair<std::string, Drain>> drains_;
  std::map<std::string, Done> done_;
  std::map<std::string, std::shared_ptr<Running>> running_;  // by id, in this process
};

}  // namespace instanced::control
