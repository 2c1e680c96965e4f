// Storage mounts (docs/mounts.md): mounts the workspace file share (SMB 3 through
// mount.cifs) and blob containers (FUSE: blobfuse2 or rclone), probes each one
// periodically off the event loop, tells `stale` from `hung`, remounts with backoff, and
// flushes and unmounts cleanly before a stop. Required mounts open the `mounts` gate that
// start scripts and jobs wait for.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <map>
#include <boost/json/object.hpp>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/monitor/client.hpp"
#include "agent/mounts/ops.hpp"
#include "agent/mounts/plan.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/gate.hpp"
#include "common/process.hpp"
#include "common/proxy_config.hpp"
#include "common/single_flight.hpp"
#include "common/subsystem.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::mounts {

enum class MountState { pending, mounting, mounted, degraded, stale, hung, unmounted, failed, unmounting, drained };
std::string_view to_string(MountState s);

class Mounts final : public Subsystem {
 public:
  Mounts(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, MountOps& ops, const StorageConfig& config,
         const ProxyConfig& proxy, const std::string& state_dir, monitor::Launcher monitors);
  ~Mounts() override;

  std::string name() const override { return "mounts"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `storage` section (the list of mounts is kept until the next start) and
  // `proxy` (the blob pre-check's and the FUSE drivers' proxy, from the next attempt).
  void reconfigure(const StorageConfig& config, const ProxyConfig& proxy);

  // Open while every required mount is mounted (or only slow): setup and jobs wait on it.
  Gate& ready_gate() { return ready_; }
  // prepare_stop / prepare_restart: flush (syncfs) and unmount every mount; no remount for
  // storage.drain_hold. Refused (the error) when a mount could not be flushed; a mount
  // that is busy is left mounted and named in the result.
  boost::asio::awaitable<Result<std::string>> drain(std::string action);
  // Unmounts (lazily if it must) and mounts again now. Error: no such mount.
  Result<void> remount(const std::string& name);

  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  // The control plane's commands it answers, and its say on stopping the VM (docs/protocol.md).
  void add_commands(control::CommandRegistry& commands);

 private:
  struct Supervised;
  struct Unmounted {
    bool flushed = true;
    bool unmounted = true;
    std::string note;
  };

  struct Failed {  // why an attempt failed
    Reason reason;
    std::string message;
  };

  boost::asio::awaitable<void> supervise(Supervised& s);
  boost::asio::awaitable<void> attempt(Supervised& s);
  boost::asio::awaitable<std::optional<Failed>> prepare_mount(Supervised& s, const MountPlan& plan);
  boost::asio::awaitable<std::optional<Failed>> mount_once(Supervised& s, const MountPlan& plan, const Secrets& secrets);
  boost::asio::awaitable<std::optional<Failed>> mount_fuse(Supervised& s, const MountPlan& plan, const Secrets& secrets);
  boost::asio::awaitable<Result<monitor::Run>> launch_driver(Supervised& s, const MountPlan& plan,
                                                             const std::vector<std::string>& proxy_env);
  void follow_driver(Supervised& s, monitor::Run run);
  boost::asio::awaitable<void> take_back_driver(Supervised& s);
  std::filesystem::path run_folder(const Supervised& s) const;
  std::filesystem::path driver_log(const Supervised& s) const;  // its output, in its run folder
  boost::asio::awaitable<void> check(Supervised& s);
  boost::asio::awaitable<void> detach(Supervised& s, bool lazy);
  boost::asio::awaitable<Unmounted> unmount_cleanly(Supervised& s);
  boost::asio::awaitable<Result<void>> tcp_check(const std::string& host, unsigned port);
  boost::asio::awaitable<std::pair<ExitStatus, std::string>> run_helper(const SpawnSpec& spec);
  Result<Secrets> read_secrets(const MountConfig& m) const;
  // What /proc/self/mountinfo shows on top of `mount_point` now, if anything.
  std::optional<MountEntry> mounted_at(const std::string& mount_point);
  Tools tools() const;
  // Whether `rclone mount` knows --devname: asked once per program (its --help).
  boost::asio::awaitable<bool> rclone_knows_devname(const std::string& rclone);
  SpawnSpec spec_for(const std::vector<std::string>& argv, const std::vector<std::string>& env) const;
  void set_state(Supervised& s, MountState to, Reason reason, std::string error);
  void failed_attempt(Supervised& s, Reason reason, std::string error);
  void publish();
  boost::json::object mount_json(const Supervised& s) const;

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  MountOps& ops_;
  StorageConfig config_;
  ProxyConfig proxy_;
  std::string secrets_dir_;
  std::map<std::string, bool> rclone_devname_;  // rclone_knows_devname's answers, by program
  monitor::Launcher monitors_;
  Logger log_;
  std::vector<std::unique_ptr<Supervised>> mounts_;
  Gate ready_;
  bool stopping_ = false;
};

}  // namespace instanced::mounts
