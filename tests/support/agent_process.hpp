// Runs the real instanced binary for tests and benchmarks: a private temporary folder,
// a config written there, and a NOTIFY_SOCKET datagram socket that receives what the
// agent tells systemd.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace instanced::testing {

using namespace std::chrono_literals;

// A folder under /tmp, removed with its content at the end (mode 0755 so that clients
// running as other users can reach a socket inside). What is mounted inside is detached
// first, its FUSE connections aborted: the removal never waits on a server that does not
// answer (a process blocked in a request the server has read cannot even be killed).
class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }
  void write(const std::string& name, const std::string& content) const;

 private:
  std::filesystem::path path_;
};

// The datagram socket systemd would offer as NOTIFY_SOCKET.
class NotifySocket {
 public:
  explicit NotifySocket(std::filesystem::path path);
  ~NotifySocket();
  const std::filesystem::path& path() const { return path_; }
  // The next datagram, or nothing after `timeout`.
  std::optional<std::string> receive(std::chrono::milliseconds timeout);
  // Receives until a datagram contains `what`; everything received is appended to `seen`.
  bool wait_for(const std::string& what, std::chrono::milliseconds timeout, std::vector<std::string>* seen = nullptr);

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout (and stderr when asked)
};

// fork + exec of `args`, standard output and error appended to `log`; `env` is added to
// the environment (an empty value removes the variable). Returns the child's pid.
pid_t spawn(const std::vector<std::string>& args, const std::string& log,
            const std::map<std::string, std::string>& env = {});

// Runs a shell command line and captures its standard output.
CommandResult run_command(const std::string& command_line);

// A TCP port on 127.0.0.1 that was free a moment ago.
int free_port();
// A stream connection to the Unix socket at `path` (close-on-exec), or -1.
int connect_unix(const std::filesystem::path& path);
// A whole file's content ("" if it cannot be read).
std::string slurp(const std::filesystem::path& path);
// Looks at `pred` every 20 ms until it holds (true) or `timeout` passes (false): how tests
// wait for a condition instead of sleeping a fixed time.
bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout = 10s);

// The workload monitors (instanced-run) started on run folders under `dir`, and the
// jobs started with a status socket under it: what outlives the agents of a test.
std::vector<pid_t> workloads_in(const std::filesystem::path& dir);
// Every mount below `dir`, innermost first: a FUSE connection is aborted (its blocked
// requests fail at once), then the mount is lazily detached. Reads only /proc/self/mountinfo,
// never the mount points themselves. TempDir's destructor calls it.
void detach_mounts_under(const std::filesystem::path& dir);

class AgentProcess {
 public:
  // Writes `config_yaml` (with {dir} replaced by the temp folder) to dir/instanced.yaml.
  AgentProcess(const TempDir& dir, const std::string& config_yaml);
  ~AgentProcess();

  // Starts the agent; `env` is added to the environment.
  void start(const std::map<std::string, std::string>& env = {}, const std::vector<std::string>& extra_args = {});
  // Starts and waits for READY=1; false if it did not come within `timeout`.
  bool start_and_wait_ready(std::chrono::milliseconds timeout = 10s,
                            const std::map<std::string, std::string>& env = {});
  void signal(int sig) const;
  // The exit status once the process ended, or nothing after `timeout`.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();

  pid_t pid() const { return pid_; }
  NotifySocket& notify() { return notify_; }
  std::filesystem::path socket() const { return dir_ / "status.sock"; }
  std::filesystem::path config_file() const { return dir_ / "instanced.yaml"; }
  std::filesystem::path log_file() const { return dir_ / "agent.log"; }
  std::string log() const;
  // Until the agent's log holds `text`.
  bool wait_log(const std::string& text, std::chrono::milliseconds timeout = 10s) const;
  // curl over the status socket: "-s -o - -w '%{http_code}'"-style helpers.
  CommandResult curl(const std::string& args) const;
  std::vector<std::string> notifications;  // every datagram received by wait helpers
  // Put before the agent's command line (unshare ...); the wrapper must exec the agent, so
  // that pid() is the agent's.
  std::vector<std::string> wrapper;

 private:
  const TempDir& dir_;
  NotifySocket notify_;
  pid_t pid_ = -1;
};

std::string expand(std::string text, const TempDir& dir);
// The binaries under test: this build's, or those named by INSTANCED_TEST_AGENT and
// INSTANCED_TEST_INSTANCECTL (scripts/test runs the suite again against the portable build).
std::string agent_binary();
std::string instancectl_binary();
// INSTANCED_TEST_AGENT_WRAPPER, if set: a program every AgentProcess starts the agent
// through (after its own `wrapper`), such as the old-kernel seccomp launcher.
std::vector<std::string> agent_wrapper_from_environment();

}  // namespace instanced::testing
