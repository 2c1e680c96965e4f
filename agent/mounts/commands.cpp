// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/mounts/mounts.hpp"

#include "agent/control/commands.hpp"

namespace instanced::mounts {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

// remount {name}: lazily unmounts the mount (if mounted) and mounts it again. The drain
// before a stop flushes and unmounts.
void Mounts::add_commands(control::CommandRegistry& commands) {
  commands.add("remount", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto* name = args.if_contains("name");
    if (!name || !name->is_string()) co_return CommandResult{Status::invalid, {}, "args.name: missing or not a string"};
    auto r = remount(std::string(name->as_string()));
    if (!r) co_return CommandResult{Status::invalid, {}, "args.name: " + r.error().message};
    co_return CommandResult{Status::ok, {{"remount", "started"}}, {}};
  });
  commands.add_drain("mounts", [this](std::string action) { return drain(std::move(action)); });
}

}  // namespace instanced::mounts
