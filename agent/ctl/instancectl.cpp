// instancectl: the operator's client of the status socket.
// Exit status (instancectl(1)): 0 healthy, 1 degraded (or what was asked about is not ok),
// 2 failed, 3 the agent refused the request, 64 usage error, 69 the agent is unreachable,
// 77 permission denied.
#include "agent/ctl/client.hpp"

using namespace instanced::ctl;

namespace {

const char* kUsageText =
    "usage: instancectl [--socket PATH] [--json] COMMAND\n"
    "\n"
    "commands:\n"
    "  status    the agent's state and every subsystem's\n"
    "  health    healthy or the reasons it is not\n"
    "  version   the agent's version\n"
    "  control   the control channel: connection, outbox, last error\n"
    "  setup     setup scripts: state, start, duration, exit status of each\n"
    "  setup logs NAME [--follow]   a script's output (of the running or last run)\n"
    "  setup rerun NAME             run a script again (after a failure, or on purpose)\n"
    "  disk      watched paths (size, used, free, inodes, state) and what fills the disk\n"
    "  disk scan                    scan for the largest directories and files now\n"
    "  disk reclaim [--dry-run] [RULE...]   free space by the configured rules\n"
    "  reboot    reboot, unless the disk rule forbids it (free space first)\n"
    "  mounts    file share and blob mounts: state, probe latency, last error, remounts\n"
    "  mounts remount NAME          unmount (lazily) and mount again\n"
    "  gpu       GPUs: health and why, memory, utilisation, temperature, power, ECC, XIDs;\n"
    "            the driver and the CUDA stack\n"
    "  jobs      the job queue: running jobs, queued ones (position, what each waits for),\n"
    "            the last finished\n"
    "  job submit [--id ID] [--image IMAGE [--image-archive FILE]] [--gpus N|all]\n"
    "             [--timeout DURATION] [--workdir DIR] [--user USER] [--cpu-weight N]\n"
    "             [--env NAME=VALUE]... [--label KEY=VALUE]... -- COMMAND [ARG...]\n"
    "  job show ID                  one job: state, times, exit status, reason\n"
    "  job logs ID [--follow]       a job's output\n"
    "  job cancel ID                cancel a queued or running job\n"
    "  apps      the users' applications: up, degraded or down and why, probe latency,\n"
    "            restarts, Jupyter kernels and terminals\n"
    "  idle      idle or not and what is active; the schedule and the next stop\n"
    "  ssh       the SSH policy, the unit's state, drift undone\n"
    "  diagnostics [-o FILE] [--upload-url-file FILE|-]\n"
    "            a bundle for support (journal, configuration without secrets, state,\n"
    "            status, logs' tails): into FILE (default instanced-diagnostics-ID.tar.gz),\n"
    "            or uploaded by the agent to the pre-signed URL in FILE (- reads stdin)\n"
    "  update [status]              self-update's last attempt: versions, state, reason\n"
    "\n"
    "  --socket PATH  status socket (default $INSTANCED_SOCKET or /run/instanced/status.sock)\n"
    "  --json         print the agent's JSON answer unchanged\n"
    "\n"
    "exit status: 0 healthy, 1 degraded, 2 failed, 3 refused by the agent, 64 usage,\n"
    "             69 agent unreachable, 77 permission denied\n";

}  // namespace

int main(int argc, char** argv) {
  Args a;
  if (const char* env = std::getenv("INSTANCED_SOCKET"); env && *env) a.socket = env;
  std::vector<std::string> args(argv + 1, argv + argc);
  for (std::size_t i = 0; i < args.size(); ++i) {
    const auto& arg = args[i];
    if (arg == "--socket" && i + 1 < args.size()) {
      a.socket = args[++i];
    } else if (arg.starts_with("--socket=")) {
      a.socket = arg.substr(9);
    } else if (a.command == "diagnostics" && arg != "--json") {
      a.operands.push_back(arg);
    } else if (a.command == "job") {
      // Everything after "job" is the subcommand's (submit has options of its own).
      if (arg == "--follow" || arg == "-f") a.follow = true;
      else if (arg == "--json" && (a.operands.empty() || a.operands[0] != "submit")) a.json = true;
      else a.operands.push_back(arg);
    } else if (arg == "--json") {
      a.json = true;
    } else if (arg == "--follow" || arg == "-f") {
      a.follow = true;
    } else if (arg == "--dry-run" || arg == "-n") {
      a.dry_run = true;
    } else if (arg == "--help" || arg == "-h") {
      std::cout << kUsageText;
      return 0;
    } else if (!arg.starts_with("-") && a.command.empty()) {
      a.command = arg;
    } else if (!arg.starts_with("-") && a.command == "setup" && a.operands.size() < 2) {
      a.operands.push_back(arg);
    } else if (!arg.starts_with("-") && a.command == "mounts" && a.operands.size() < 2) {
      a.operands.push_back(arg);
    } else if (!arg.starts_with("-") && a.command == "update" && a.operands.empty()) {
      a.operands.push_back(arg);
    } else if (!arg.starts_with("-") && a.command == "disk" && a.operands.size() < 16) {
      a.operands.push_back(arg);
    } else {
      std::cerr << "instancectl: unexpected argument '" << arg << "'\n" << kUsageText;
      return kUsage;
    }
  }
  Style style;
  style.colour = isatty(1) && !std::getenv("NO_COLOR");
  try {
    if (a.command == "status") return cmd_status(a, style);
    if (a.command == "health") return cmd_health(a, style);
    if (a.command == "version") return cmd_version(a);
    if (a.command == "control") return cmd_control(a, style);
    if (a.command == "setup") return cmd_setup(a, style);
    if (a.command == "disk") return cmd_disk(a, style);
    if (a.command == "mounts") return cmd_mounts(a, style);
    if (a.command == "gpu") return cmd_gpu(a, style);
    if (a.command == "jobs") return cmd_jobs(a, style);
    if (a.command == "job") return cmd_job(a);
    if (a.command == "reboot") return cmd_reboot(a);
    if (a.command == "apps") return cmd_apps(a, style);
    if (a.command == "idle") return cmd_idle(a);
    if (a.command == "ssh") return cmd_ssh(a);
    if (a.command == "diagnostics") return cmd_diagnostics(a);
    if (a.command == "update") return cmd_update(a, style);
    std::cerr << (a.command.empty() ? std::string("instancectl: a command is needed\n")
                                    : "instancectl: unknown command '" + a.command + "'\n")
              << kUsageText;
    return kUsage;
  } catch (const Failure& e) {
    std::cerr << "instancectl: " << e.what() << "\n";
    return e.code;
  } catch (const std::exception& e) {  // an answer that is not what the agent sends
    std::cerr << "instancectl: " << e.what() << "\n";
    return kRefused;
  }
}
