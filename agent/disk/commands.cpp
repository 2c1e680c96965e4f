// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/disk/guardian.hpp"

#include "agent/control/commands.hpp"

namespace instanced::disk {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

// No command of its own: the 5 GB rule's veto refuses stop, restart and reboot while `/` is
// below it.
void Guardian::add_commands(control::CommandRegistry& commands) {
  commands.add_veto("disk", [this](std::string_view action) { return veto(action); });
}

}  // namespace instanced::disk
