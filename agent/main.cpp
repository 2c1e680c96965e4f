// instanced: wires the real OS implementations to the subsystems and runs the daemon.
// Nothing here but wiring; behaviour lives in the subsystems' libraries.
#include <boost/asio/io_context.hpp>
#include <cstdio>
#include <iostream>
#include <thread>
#include <unistd.h>

#include "agent/apps/apps.hpp"
#include "common/build_info.hpp"
#include "agent/control/channel.hpp"
#include "agent/control/commands.hpp"
#include "agent/daemon/cli.hpp"
#include "agent/daemon/daemon.hpp"
#include "agent/daemon/run_record.hpp"
#include "agent/disk/guardian.hpp"
#include "agent/gpu/gpu.hpp"
#include "agent/idle/idle.hpp"
#include "agent/jobs/jobs.hpp"
#include "agent/mounts/mounts.hpp"
#include "agent/power/power.hpp"
#include "agent/setup/setup.hpp"
#include "agent/ssh/ssh.hpp"
#include "agent/status/server.hpp"
#include "agent/status/views.hpp"
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

void add_builtin_commands(control::CommandRegistry& commands, Daemon& daemon, status::AgentInfo& info,
                          StateRegistry& state, Clock& clock) {
  commands.add("ping", [&clock](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_return CommandResult{Status::ok, {{"pong", true}, {"time", iso8601(clock.wall_now())}}, {}};
  });
  commands.add("get_status", [&](const json::object&) -> boost::asio::awaitable<CommandResult> {
    co_return CommandResult{Status::ok, status::status_json(info, state, clock, 20), {}};
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

}  // namespace

int main(int argc, char** argv) {
  auto options = parse_command_line(std::vector<std::string>(argv + 1, argv + argc));
  if (!options) {
    std::cerr << "instanced: " << options.error().message << "\n" << usage_text();
    return 2;
  }
  if (options->help) {
    std::cout << usage_text();
    return 0;
  }
  if (options->version) {
    std::cout << "instanced " << INSTANCED_VERSION << "\n" << build_description();
    return 0;
  }

  auto loaded = load_config(options->config_file);
  if (options->record_exit) {
    // Even when the configuration is broken (the likely reason the run ended): the default
    // state folder then.
    RealFilesystem fs;
    return record_exit(fs, run_record_path(loaded ? loaded->config.state_dir : Config{}.state_dir));
  }
  if (!loaded) {
    std::cerr << "instanced: invalid configuration:\n" << loaded.error().message << "\n";
    return 1;
  }
  if (options->log_level) loaded->config.log.level = *options->log_level;
  if (options->check_config) {
    std::cout << "# " << loaded->file.string() << " is valid";
    for (const auto& d : loaded->dropins) std::cout << ", with " << d.string();
    std::cout << "\n" << dump_config(loaded->config);
    return 0;
  }
  const Config& config = loaded->config;

  Logging logging(LogTarget::automatic, config.log.level);
  RealClock clock;
  RealFilesystem fs;
  SdNotifier notifier;
  boost::asio::io_context ioc(1);
  BlockingPool pool(4);
  StateRegistry state(clock);
  Api api{clock, fs, notifier, pool, state, logging};

  status::AgentInfo info;  // outlives everything below that refers to it
  info.version = INSTANCED_VERSION;
  info.instance = instance_name(config);
  info.started = clock.now();
  info.started_wall = clock.wall_now();
  info.config_file = loaded->file;
  info.dropins = loaded->dropins;
  info.config_hash = loaded->hash;
  info.config_loaded_at = info.started_wall;

  status::Router router;
  status::add_agent_routes(router, info, state, clock);
  if (config.debug.test_hooks) add_test_hooks(router);

  status::StatusServer status_server(ioc.get_executor(), api, config.status, router);
  std::optional<int> activated;
  if (auto fds = systemd::listen_fds(); !fds.empty()) activated = fds.front();
  if (auto r = status_server.open(activated); !r) {
    logging.get("daemon")->critical("{}", r.error().message);
    return 1;
  }

  Daemon daemon(ioc, api, *options, std::move(*loaded), info);

  // The commands every agent answers; subsystems add theirs (and their vetoes) here.
  // `config` was moved into the daemon above: from here on, daemon.config() is the one.
  const Config& running = daemon.config();
  control::CommandRegistry commands(clock, fs, std::filesystem::path(running.state_dir) / "control" / "commands.json");
  add_builtin_commands(commands, daemon, info, state, clock);
  control::ControlChannel control(ioc.get_executor(), api, running.control, running.state_dir, commands, info);

  // Children (setup scripts, jobs, mount helpers) are started and reaped here; as the
  // child subreaper the agent also reaps the daemons that scripts leave behind.
  RealProcessRunner processes(ioc.get_executor());
  // Storage mounts first: start scripts (and jobs) wait for the required ones.
  // Never freed (nor the NVML reader below): a probe or sample blocked in the kernel or the
  // driver runs on a thread of its own that cannot be waited for, and may still call into
  // them after main returns. Held by a static pointer, so LeakSanitizer sees them reachable.
  static auto* const mount_ops_owner = new mounts::RealMountOps;
  auto& mount_ops = *mount_ops_owner;
  mounts::Mounts mounts(ioc.get_executor(), api, processes, mount_ops, running.storage, running.state_dir);
  mounts.add_routes(router);

  setup::Setup setup(ioc.get_executor(), api, processes, running.setup, running.state_dir,
                     setup::Environment{info.instance, running.status.socket, {}});
  setup.add_routes(router);
  setup.add_prerequisite(mounts.ready_gate());

  // The 5 GB rule: stop, restart and reboot are refused while `/` is below it.
  disk::Guardian disk(ioc.get_executor(), api, processes, running.disk, running.state_dir);
  disk.add_routes(router);

  // GPUs through NVML, loaded at run time by the dynamic loader's usual search.
  static auto* const nvml_owner = new gpu::NvmlLibrary(running.gpu.library);
  auto& nvml = *nvml_owner;
  gpu::Gpu gpu(ioc.get_executor(), api, nvml, running.gpu);
  gpu.add_routes(router);

  // The job queue: after the disk rule, the required mounts and the setup scripts.
  jobs::Jobs job_queue(ioc.get_executor(), api, processes, running.jobs, running.state_dir, running.status.socket,
                       [&gpu] {
    jobs::GpuView v;
    v.known = gpu.sampled();
    v.total = gpu.count();
    v.usable = gpu.usable_gpus();
    return v;
  });
  job_queue.add_prerequisite(disk.work_gate());
  job_queue.add_prerequisite(mounts.ready_gate());
  job_queue.add_prerequisite(setup.done_gate());
  job_queue.add_routes(router);

  // Workstation services: the users' applications, idle detection and the schedule, the
  // SSH policy, shutdowns from inside the VM. Services through systemctl.
  Systemctl services(processes, clock, running.services.systemctl, running.services.timeout);
  apps::Apps applications(ioc.get_executor(), api, services, running.applications);
  applications.add_routes(router);
  idle::RealHostActivity host;
  idle::Idle idle_watch(ioc.get_executor(), api, host, processes, running.idle, running.schedule, running.state_dir,
                        idle::Signals{[&job_queue] { return job_queue.queued() + job_queue.running(); },
                                      [&setup] { return setup.running(); },
                                      [&gpu] { return gpu.busiest_utilization(); },
                                      [&applications]() -> std::optional<apps::JupyterActivity> {
                                        auto a = applications.activity();
                                        if (!a.known) return std::nullopt;
                                        return a.jupyter;
                                      }});
  idle_watch.add_routes(router);
  ssh::Ssh ssh_policy(ioc.get_executor(), api, services, running.ssh, running.state_dir);
  ssh_policy.add_routes(router);
  // The commands each subsystem answers. The order is that of the drains and vetoes before a
  // stop: jobs first (they may write to the file share), then setup's scripts, then the
  // mounts are flushed and unmounted; the disk's veto before idle's.
  job_queue.add_commands(commands);
  setup.add_commands(commands);
  mounts.add_commands(commands);
  disk.add_commands(commands);
  idle_watch.add_commands(commands);
  ssh_policy.add_commands(commands);
  static auto* const logind_owner = new power::SdBusLogind;  // its library stays loaded
  power::Power power_watch(ioc.get_executor(), api, services, *logind_owner, running.power,
                           [&control](Clock::steady_time::duration d) { return control.wait_delivered(d); });

  // Each with the section(s) it takes from a reloaded configuration.
  daemon.add(status_server, &Config::status);
  daemon.add(control, &Config::control);
  daemon.add(disk, &Config::disk);
  daemon.add(mounts, &Config::storage);
  daemon.add(gpu, &Config::gpu);
  daemon.add(setup, &Config::setup);
  daemon.add(job_queue, &Config::jobs);
  daemon.add(applications, &Config::applications);
  daemon.add(idle_watch, [&idle_watch](const Config& c) { idle_watch.reconfigure(c.idle, c.schedule); });
  daemon.add(ssh_policy, &Config::ssh);
  // Last: stopped first, while the control channel can still deliver os_shutdown.
  daemon.add(power_watch, &Config::power);
  return daemon.run();
}
