// The control plane's commands this subsystem answers (docs/protocol.md), registered by
// add_commands() as its routes are by add_routes().
#include "agent/jobs/jobs.hpp"

#include "agent/control/commands.hpp"

namespace instanced::jobs {
namespace json = boost::json;
using control::CommandResult;
using control::Status;

namespace {

std::optional<std::string> id_of(const json::object& args) {
  auto* id = args.if_contains("id");
  if (!id || !id->is_string() || id->as_string().empty()) return std::nullopt;
  return std::string(id->as_string());
}

}  // namespace

// submit_job {job}, cancel_job {id}, get_job {id} (docs/jobs.md); the drain before a stop
// holds new jobs and waits for the running ones.
void Jobs::add_commands(control::CommandRegistry& commands) {
  commands.add("submit_job", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto spec = parse_job_spec(args, config_, "args.");
    if (!spec) co_return CommandResult{Status::invalid, {}, spec.error().message};
    auto r = co_await submit(std::move(*spec));
    using K = Submitted::Kind;
    if (r.ok()) co_return CommandResult{Status::ok, std::move(r.job), {}};
    if (r.kind == K::invalid || r.kind == K::conflict) co_return CommandResult{Status::invalid, {}, "args." + r.error};
    co_return CommandResult{Status::refused, {}, r.error};
  });
  commands.add("cancel_job", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto id = id_of(args);
    if (!id) co_return CommandResult{Status::invalid, {}, "args.id: missing or not a string"};
    auto r = cancel(*id);
    if (!r) co_return CommandResult{Status::refused, {}, r.error().message};
    co_return CommandResult{Status::ok, std::move(*r), {}};
  });
  commands.add("get_job", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto id = id_of(args);
    if (!id) co_return CommandResult{Status::invalid, {}, "args.id: missing or not a string"};
    auto j = job_json(*id);
    if (!j) co_return CommandResult{Status::invalid, {}, "args.id: no job '" + *id + "'"};
    co_return CommandResult{Status::ok, std::move(*j), {}};
  });
  commands.add_drain("jobs", [this](std::string action) { return drain(std::move(action)); });
}

}  // namespace instanced::jobs
