// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/setup/setup.hpp"

#include "agent/control/commands.hpp"

namespace instanced::setup {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

// rerun_setup {name}: runs the script again and answers with the run's outcome. The drain
// before a stop waits for a running script.
void Setup::add_commands(control::CommandRegistry& commands) {
  commands.add("rerun_setup", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto* name = args.if_contains("name");
    if (!name || !name->is_string()) co_return CommandResult{Status::invalid, {}, "args.name: missing or not a string"};
    auto ticket = rerun(std::string(name->as_string()));
    if (!ticket) co_return CommandResult{Status::refused, {}, ticket.error().message};
    auto record = co_await wait_for_run(*ticket);
    if (!record) co_return CommandResult{Status::failed, {}, "the agent stopped before the run ended"};
    json::object result{{"state", to_string(record->state)}, {"run", to_json(record->last)}};
    if (record->state == ScriptState::succeeded) co_return CommandResult{Status::ok, std::move(result), {}};
    co_return CommandResult{Status::failed, std::move(result), record->last.reason};
  });
  commands.add_drain("setup", [this](std::string action) { return drain(std::move(action)); });
}

}  // namespace instanced::setup
