// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/idle/idle.hpp"

#include "agent/control/commands.hpp"

namespace instanced::idle {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

// idle_shutdown and set_schedule (docs/workstation.md). idle_shutdown is refused unless
// idle (this veto) and, as every stop, while the 5 GB rule is violated (the disk's veto);
// then the same drain as prepare_stop.
void Idle::add_commands(control::CommandRegistry& commands) {
  commands.add("idle_shutdown", [&commands](const json::object&) -> boost::asio::awaitable<CommandResult> {
    const std::string action = "idle_shutdown";  // named: no temporaries in a co_await (GCC 12)
    co_return co_await commands.prepare(action);
  });
  commands.add_veto("idle", [this](std::string_view action) { return veto(action); });
  commands.add("set_schedule", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto r = set_schedule(args);
    if (!r && r.error().kind == ErrorKind::invalid) co_return CommandResult{Status::invalid, {}, "args." + r.error().message};
    if (!r) co_return CommandResult{Status::failed, {}, r.error().message};
    co_return CommandResult{Status::ok, std::move(*r), {}};
  });
}

}  // namespace instanced::idle
