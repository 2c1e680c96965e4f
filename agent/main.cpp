// instanced: wires the real OS implementations to the subsystems and runs the daemon.
// Nothing here but wiring; behaviour lives in the subsystems' libraries.
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <iostream>
#include <optional>
#include <thread>
#include <unistd.h>

#include "agent/apps/apps.hpp"
#include "agent/control/channel.hpp"
#include "agent/control/commands.hpp"
#include "agent/daemon/cli.hpp"
#include "agent/daemon/config_push.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/daemon/run_record.hpp"
#include "agent/diagnostics/diagnostics.hpp"
#include "agent/disk/guardian.hpp"
#include "agent/gpu/gpu.hpp"
#include "agent/idle/idle.hpp"
#include "agent/inventory/inventory.hpp"
#include "agent/jobs/jobs.hpp"
#include "agent/monitor/client.hpp"
#include "agent/mounts/mounts.hpp"
#include "agent/power/power.hpp"
#include "agent/setup/setup.hpp"
#include "agent/ssh/ssh.hpp"
#include "agent/update/update.hpp"
#include "agent/status/server.hpp"
#include "agent/status/views.hpp"
#include "common/build_info.hpp"
#include "common/process.hpp"
#include "common/services.hpp"
#include "common/systemd.hpp"

using namespace instanced;

namespace {

// A test hook (debug.test_hooks): blocks the event loop, as a bug would, so the watchdog
// tests can see the pings stop.
void add_test_hooks(status::Router& router) {
  router.add(status::http::verb::post, "/v1/debug/stall", [](const status::Request& req) {
    std::string_view t = req.target();
    long ms = 1000;
    if (auto p = t.find("ms="); p != std::string_view::npos) ms = std::strtol(std::string(t.substr(p + 3)).c_str(), nullptr, 10);
    ms = std::clamp(ms, 0L, 60000L);
    std::this_thread::sleep_for(std::chrono::milliseconds(ms));
    return status::json_response(status::http::status::ok, "{\"stalled_ms\":" + std::to_string(ms) + "}");
  });
}

using control::CommandResult;
using control::Status;
namespace json = boost::json;

// get_config's answer: the effective configuration (as --check-config prints it, without
// the comments), the files in the order they were read, and where each set key came from.
json::object config_json(const LoadedConfig& loaded) {
  json::array files{json::value(loaded.file.string())};
  for (const auto& d : loaded.dropins) files.emplace_back(d.string());
  json::object origins;
  for (const auto& [key, file] : loaded.origins) origins[key] = file.string();
  return json::object{{"yaml", dump_config(loaded.config)}, {"files", std::move(files)},
                      {"origins", std::move(origins)}, {"config_hash", loaded.hash}};
}

void add_builtin_commands(control::CommandRegistry& commands, Daemon& daemon, ConfigPush& push,
                          status::AgentInfo& info, StateRegistry& state, Clock& clock) {
  commands.add("ping", [&clock](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_return CommandResult{Status::ok, {{"pong", true}, {"time", iso8601(clock.wall_now())}}, {}};
  });
  commands.add("get_status", [&](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_return CommandResult{Status::ok, status::status_json(info, state, clock, 20), {}};
  });
  commands.add("get_config", [&daemon](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_return CommandResult{Status::ok, config_json(daemon.loaded()), {}};
  });
  commands.add("set_config", [&push](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    auto setting = push.set(args);
    auto outcome = co_await std::move(setting);
    static constexpr Status kStatus[] = {Status::ok, Status::invalid, Status::refused, Status::failed};
    co_return CommandResult{kStatus[static_cast<int>(outcome.answer)], std::move(outcome.result), outcome.error};
  });
  commands.add("reload_config", [&](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_await daemon.reload();
    if (info.last_reload && !info.last_reload->ok)
      co_return CommandResult{Status::failed, {}, info.last_reload->error};
    co_return CommandResult{Status::ok, {{"config_hash", info.config_hash}}, {}};
  });
  for (const char* action : {"prepare_stop", "prepare_restart"}) {
    std::string what = action;
    commands.add(what, [&commands, what](const json::object&) -> boost::asio::awaitable<CommandResult> {
      co_return co_await commands.prepare(what);
    });
  }
}

// What the command line asks for that needs no running agent (help, version, the exit
// record, a configuration check, a broken configuration): its exit status, or nothing.
std::optional<int> answer_without_running(const Options& options, Result<LoadedConfig>& loaded) {
  if (options.help) {
    std::cout << usage_text();
    return 0;
  }
  if (options.version) {
    std::cout << "instanced " << build_version() << "\n" << build_description();
    return 0;
  }
  if (options.record_exit) {
    // Even when the configuration is broken (the likely reason the run ended): the default
    // state folder then.
    RealFilesystem fs;
    return record_exit(fs, run_record_path(loaded ? loaded->config.state_dir : Config{}.state_dir));
  }
  if (!loaded) {
    std::cerr << "instanced: invalid configuration:\n" << loaded.error().message << "\n";
    return 1;
  }
  if (options.log_level) loaded->config.log.level = *options.log_level;
  if (options.check_config) {
    std::cout << "# " << loaded->file.string() << " is valid";
    for (const auto& d : loaded->dropins) std::cout << ", with " << d.string();
    std::cout << "\n" << dump_config_with_origins(*loaded);
    return 0;
  }
  return std::nullopt;
}

status::AgentInfo agent_info(const LoadedConfig& loaded, Clock& clock) {
  status::AgentInfo info;
  info.version = build_version();
  info.instance = instance_name(loaded.config);
  info.started = clock.now();
  info.started_wall = clock.wall_now();
  info.config_file = loaded.file;
  info.dropins = loaded.dropins;
  info.config_hash = loaded.hash;
  info.config_loaded_at = info.started_wall;
  return info;
}

// Every subsystem after the status server and the control channel, wired to the real OS,
// constructed in start order (the members' order).
struct Subsystems {
  Subsystems(boost::asio::io_context& ioc, Api& api, const Config& running, const status::AgentInfo& info,
             control::ControlChannel& control);
  void add_routes(status::Router& router);
  void add_commands(control::CommandRegistry& commands);
  // Each with the section(s) it takes from a reloaded configuration.
  void add_to(Daemon& daemon);

  // Children (setup scripts, jobs, mount helpers) are started and reaped here; as the
  // child subreaper the agent also reaps the daemons that scripts leave behind.
  RealProcessRunner processes;
  // Never freed (nor the NVML reader and the logind client below): a probe or sample blocked
  // in the kernel or the driver runs on a thread of its own that cannot be waited for, and
  // may still call into them after main returns. Held by static pointers, so LeakSanitizer
  // sees them reachable.
  mounts::RealMountOps& mount_ops;
  // Storage mounts first: start scripts (and jobs) wait for the required ones.
  mounts::Mounts mounts;
  setup::Setup setup;
  // The 5 GB rule: stop, restart and reboot are refused while `/` is below it.
  disk::Guardian disk;
  // GPUs through NVML, loaded at run time by the dynamic loader's usual search.
  gpu::NvmlLibrary& nvml;
  gpu::Gpu gpu;
  // The job queue: after the disk rule, the required mounts and the setup scripts.
  jobs::Jobs job_queue;
  // Workstation services: the users' applications, idle detection and the schedule, the
  // SSH policy, shutdowns from inside the VM. Services through systemctl.
  Systemctl services;
  apps::Apps applications;
  idle::RealHostActivity host;
  idle::Idle idle_watch;
  ssh::Ssh ssh_policy;
  power::SdBusLogind& logind;  // its library stays loaded
  power::Power power_watch;
  // What the agent runs on: in every hello, and get_inventory's answer.
  inventory::Inventory inventory;
};

template <class T, class... Args>
T& immortal(Args&&... args) {
  static auto* const owner = new T(std::forward<Args>(args)...);
  return *owner;
}

jobs::GpuView gpu_view(const gpu::Gpu& gpu) {
  jobs::GpuView v;
  v.known = gpu.sampled();
  v.total = gpu.count();
  v.usable = gpu.usable_gpus();
  return v;
}

Subsystems::Subsystems(boost::asio::io_context& ioc, Api& api, const Config& running, const status::AgentInfo& info,
                       control::ControlChannel& control)
    : processes(ioc.get_executor()),
      mount_ops(immortal<mounts::RealMountOps>()),
      mounts(ioc.get_executor(), api, processes, mount_ops, running.storage, running.proxy, running.state_dir,
             monitor::default_launcher("instanced-mounts.slice")),
      setup(ioc.get_executor(), api, processes, running.setup, running.state_dir,
            setup::Environment{info.instance, running.status.socket, {}}, monitor::default_launcher("instanced-setup.slice")),
      disk(ioc.get_executor(), api, processes, running.disk, running.state_dir),
      nvml(immortal<gpu::NvmlLibrary>(running.gpu.library)),
      gpu(ioc.get_executor(), api, nvml, running.gpu),
      job_queue(ioc.get_executor(), api, processes, running.jobs, running.state_dir, running.status.socket,
                [this] { return gpu_view(gpu); }, monitor::default_launcher("instanced-jobs.slice", true)),
      services(processes, api.clock, running.services.systemctl, running.services.timeout),
      applications(ioc.get_executor(), api, services, running.applications),
      idle_watch(ioc.get_executor(), api, host, processes, running.idle, running.schedule, running.state_dir,
                 idle::Signals{[this] { return job_queue.queued() + job_queue.running(); },
                               [this] { return setup.running(); },
                               [this] { return gpu.busiest_utilization(); },
                               [this]() -> std::optional<apps::JupyterActivity> {
                                 auto a = applications.activity();
                                 if (!a.known) return std::nullopt;
                                 return a.jupyter;
                               }}),
      ssh_policy(ioc.get_executor(), api, services, running.ssh, running.state_dir),
      logind(immortal<power::SdBusLogind>()),
      power_watch(ioc.get_executor(), api, services, logind, running.power,
                  [&control](Clock::steady_time::duration d) { return control.wait_delivered(d); }),
      inventory(api, running.inventory, [this] { return gpu.inventory_json(); }) {
  control.set_inventory([this] { return inventory.get(); });
  setup.add_prerequisite(mounts.ready_gate());
  job_queue.add_prerequisite(disk.work_gate());
  job_queue.add_prerequisite(mounts.ready_gate());
  job_queue.add_prerequisite(setup.done_gate());
}

void Subsystems::add_routes(status::Router& router) {
  mounts.add_routes(router);
  setup.add_routes(router);
  disk.add_routes(router);
  gpu.add_routes(router);
  job_queue.add_routes(router);
  applications.add_routes(router);
  idle_watch.add_routes(router);
  ssh_policy.add_routes(router);
}

// The order is that of the drains and vetoes before a stop: jobs first (they may write to
// the file share), then setup's scripts, then the mounts are flushed and unmounted; the
// disk's veto before idle's.
void Subsystems::add_commands(control::CommandRegistry& commands) {
  commands.add("get_inventory", [this](const json::object&) -> boost::asio::awaitable<CommandResult> {
    auto asking = inventory.get();
    json::object now = co_await std::move(asking);
    co_return CommandResult{Status::ok, {{"inventory", std::move(now)}}, {}};
  });
  job_queue.add_commands(commands);
  setup.add_commands(commands);
  mounts.add_commands(commands);
  disk.add_commands(commands);
  idle_watch.add_commands(commands);
  ssh_policy.add_commands(commands);
}

// Why writing to the disk is refused now (the 5 GB rule), if it is: for the diagnostics
// bundle and self-update.
std::function<std::optional<std::string>()> disk_refusal(Subsystems& subsystems, StateRegistry& state) {
  return [&subsystems, &state]() -> std::optional<std::string> {
    if (subsystems.disk.work_gate().is_open()) return std::nullopt;
    auto it = state.subsystems().find("disk");
    return fmt::format("refused while the disk guardian holds work back (the 5 GB rule): {}",
                       it == state.subsystems().end() ? "not checked yet" : it->second.summary);
  };
}

// The diagnostics bundle's sources: the status views, the configuration (and the secret
// files it names), the inventory, the disk rule, the setup and job logs.
diagnostics::Sources diagnostics_sources(const status::Router& router, Daemon& daemon, Subsystems& subsystems,
                                         StateRegistry& state) {
  diagnostics::Sources s;
  s.router = &router;
  s.effective_config = [&daemon] { return dump_config_with_origins(daemon.loaded()); };
  s.secret_files = [&daemon] { return secret_files(daemon.config()); };
  s.inventory = [&subsystems] { return subsystems.inventory.get(); };
  s.refusal = disk_refusal(subsystems, state);
  s.log_dirs = [&daemon] {
    return std::vector<std::pair<std::string, std::string>>{{"setup", daemon.config().setup.log_dir},
                                                            {"jobs", daemon.config().jobs.log_dir}};
  };
  return s;
}

void Subsystems::add_to(Daemon& daemon) {
  daemon.add(disk, &Config::disk);
  daemon.add(mounts, [this](const Config& c) { mounts.reconfigure(c.storage, c.proxy); });
  daemon.add(gpu, &Config::gpu);
  daemon.add(setup, &Config::setup);
  daemon.add(job_queue, &Config::jobs);
  daemon.add(applications, &Config::applications);
  daemon.add(idle_watch, [this](const Config& c) { idle_watch.reconfigure(c.idle, c.schedule); });
  daemon.add(ssh_policy, &Config::ssh);
  // Last: stopped first, while the control channel can still deliver os_shutdown.
  daemon.add(power_watch, &Config::power);
}

int run_agent(const Options& options, LoadedConfig loaded) {
  Logging logging(LogTarget::automatic, loaded.config.log.level);
  RealClock clock;
  RealFilesystem fs;
  SdNotifier notifier;
  boost::asio::io_context ioc(1);
  BlockingPool pool(4);
  StateRegistry state(clock);
  Api api{clock, fs, notifier, pool, state, logging};
  status::AgentInfo info = agent_info(loaded, clock);  // outlives everything below that refers to it

  status::Router router;
  status::add_agent_routes(router, info, state, clock);
  if (loaded.config.debug.test_hooks) add_test_hooks(router);
  status::StatusServer status_server(ioc.get_executor(), api, loaded.config.status, router);
  std::optional<int> activated;
  if (auto fds = systemd::listen_fds(); !fds.empty()) activated = fds.front();
  if (auto r = status_server.open(activated); !r) {
    logging.get("daemon")->critical("{}", r.error().message);
    return 1;
  }

  Daemon daemon(ioc, api, options, std::move(loaded), info);
  // `loaded` was moved into the daemon: from here on, daemon.config() is the configuration.
  const Config& running = daemon.config();
  // The commands every agent answers; subsystems add theirs (and their vetoes and drains).
  control::CommandRegistry commands(clock, fs, std::filesystem::path(running.state_dir) / "control" / "commands.json");
  ConfigPush push(ioc.get_executor(), api, daemon);
  add_builtin_commands(commands, daemon, push, info, state, clock);
  control::ControlChannel control(ioc.get_executor(), api, running.control, running.proxy, running.state_dir, commands,
                                 info);
  Subsystems subsystems(ioc, api, running, info, control);
  subsystems.add_routes(router);
  subsystems.add_commands(commands);
  diagnostics::Diagnostics diagnostics(ioc.get_executor(), api, subsystems.processes, running.diagnostics,
                                       running.proxy, running.state_dir, diagnostics_sources(router, daemon, subsystems, state));
  diagnostics.add_routes(router);
  diagnostics.add_commands(commands);
  // Self-update: its installer under a monitor, a transient unit of its own (system.slice).
  update::Update updater(ioc.get_executor(), api, subsystems.processes, monitor::default_launcher("system.slice"),
                         running.update, running.proxy, running.state_dir, info, disk_refusal(subsystems, state));
  updater.add_routes(router);
  updater.add_commands(commands);

  daemon.add(status_server, &Config::status);
  daemon.add(control, [&control](const Config& c) { control.reconfigure(c.control, c.proxy); });
  daemon.add(push);
  subsystems.add_to(daemon);
  daemon.add(diagnostics, [&diagnostics](const Config& c) { diagnostics.reconfigure(c.diagnostics, c.proxy); });
  daemon.add(updater, [&updater](const Config& c) { updater.reconfigure(c.update, c.proxy); });
  return daemon.run();
}

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  if (!options) {
    std::cerr << "instanced: " << options.error().message << "\n" << usage_text();
    return 2;
  }
  auto loaded = load_config(options->config_file);
  if (auto answered = answer_without_running(*options, loaded)) return *answered;
  return run_agent(*options, std::move(*loaded));
}
