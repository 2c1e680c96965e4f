// The disk guardian (docs/disk.md): watches free space and inodes of each configured path,
// enforces the platform's 5 GB recovery rule (stop/restart and reboot are refused and new
// work is held while `/` is below it), explains what fills the disk (a background scan of
// the largest directories and files) and frees space by rules on request.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "agent/disk/levels.hpp"
#include "agent/disk/reclaim.hpp"
#include "agent/disk/scanner.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/gate.hpp"
#include "common/process.hpp"
#include "common/subsystem.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::disk {

class Guardian final : public Subsystem {
 public:
  Guardian(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, const DiskConfig& config, std::string state_dir);
  ~Guardian() override;

  std::string name() const override { return "disk"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `disk` section.
  void reconfigure(const DiskConfig& config);

  // The reason to refuse stopping, restarting or rebooting, while a path with a recovery
  // rule is in recovery_required: how many bytes must still be freed, and where.
  std::optional<std::string> veto(std::string_view action) const;
  // Open while no path is in recovery_required: new jobs wait on it.
  Gate& work_gate() { return work_gate_; }

  // Starts a scan of scan_root unless one runs. Error: already running.
  Result<void> start_scan(std::string why);
  // Starts reclaim with `rules` (all enabled ones if empty). Error: unknown rule, or running.
  Result<void> start_reclaim(std::vector<std::string> rules, bool dry_run, std::string why);
  // Reboots through reboot_command unless vetoed; the error is the veto.
  Result<void> reboot();

  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  struct PathState {
    WatchedPath config;
    Hysteresis hysteresis{0, {}};
    std::optional<FsUsage> usage;
    Limits limits;
    Level level = Level::ok;
    Clock::wall_time since{};
    std::string error;  // the last sample failed (statvfs timed out, permission)
    bool absent = false;  // the path does not exist: nothing to watch
  };
  struct Job;  // a scan or a reclaim on a thread of its own

  boost::asio::awaitable<void> sample();
  void on_transition(PathState& p, Level from);
  void publish();
  void finish_scan();
  void finish_reclaim();
  void load_cached_scan();
  std::string recovery_reason(const PathState& p) const;

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  DiskConfig config_;
  std::string state_dir_;
  Logger log_;
  std::vector<PathState> paths_;
  Gate work_gate_;
  bool sampled_ = false;

  std::unique_ptr<Job> scan_;
  boost::json::object last_scan_;     // the last finished scan, as in /v1/disk
  std::unique_ptr<Job> reclaim_;
  boost::json::object last_reclaim_;  // the last reclaim report
};

}  // namespace instanced::disk
