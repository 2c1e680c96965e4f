// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/ssh/ssh.hpp"

#include "agent/control/commands.hpp"

namespace instanced::ssh {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

// set_ssh_policy {policy} (docs/workstation.md).
void Ssh::add_commands(control::CommandRegistry& commands) {
  commands.add("set_ssh_policy", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto r = co_await set_policy(args);
    if (!r)
      co_return CommandResult{r.error().kind == ErrorKind::invalid ? Status::invalid : Status::failed, {},
                              r.error().message};
    co_return CommandResult{Status::ok, std::move(*r), {}};
  });
}

}  // namespace instanced::ssh
