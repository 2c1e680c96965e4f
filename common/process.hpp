// Child processes behind an interface: setup scripts, jobs, mount helpers and the reboot
// all start processes through a ProcessRunner, so tests can put a recording stand-in where
// running the real thing would be harmful (systemctl reboot), and everything else runs
// real processes.
//
// Every child gets its own session and process group (so a timeout can signal all of it),
// stdin from /dev/null, default signal dispositions and an empty signal mask, an OOM score
// adjustment of 0 (not the agent's -500), and no file descriptors of the agent but its
// output pipe. The real runner reaps children from one
// SIGCHLD handler on the event loop and, as the child subreaper, also reaps the daemons
// that scripts leave behind when they exit; no thread ever blocks in waitpid.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <sys/types.h>
#include <vector>

#include "common/result.hpp"

namespace instanced {

struct UserIdentity {
  std::string name;
  uid_t uid = 0;
  gid_t gid = 0;
  std::vector<gid_t> groups;  // supplementary groups, as initgroups would set them
  std::string home;
  std::string shell;
};
// Looks a user up through NSS (getpwnam_r, getgrouplist). NSS may block (LDAP): call it
// off the event loop.
Result<UserIdentity> lookup_user(const std::string& name);
Result<UserIdentity> lookup_user(uid_t uid);

// The executable file `name` names: itself when it holds a '/', else the first match in
// `search_path` (colon-separated; empty: $PATH, or the usual system folders). "" when none.
// Stats files, which may block on a hung mount: call it off the event loop.
std::string find_program(const std::string& name, const std::string& search_path = {});

// A clean login-like environment for `user` (what scripts and jobs start from): PATH (with
// the sbin folders for root), HOME, USER, LOGNAME, SHELL, LANG=C.UTF-8.
std::map<std::string, std::string> login_environment(const UserIdentity& user);
// As SpawnSpec::env wants it: "NAME=value" entries.
std::vector<std::string> environment_entries(const std::map<std::string, std::string>& env);

struct SpawnSpec {
  std::vector<std::string> argv;  // argv[0] is the program: an absolute path
  std::vector<std::string> env;   // the whole environment, "NAME=value"
  std::string cwd = "/";
  std::optional<UserIdentity> user{};  // run as this user (the agent must be root)
  bool capture_output = true;        // stdout and stderr into one pipe; else /dev/null
  bool inherit_stderr = false;       // without capture_output: stderr stays this process's
  int inherit_fd = -1;               // given to the child as its fd 3 (an inline script)
  // Resource limits set in the child before it drops privileges: {RLIMIT_*, value}, soft
  // and hard alike. A job's memory, open files and processes.
  std::vector<std::pair<int, std::uint64_t>> limits{};
  int nice = 0;  // the child's niceness (-20..19): a job's CPU weight
};

struct ExitStatus {
  int code = -1;   // the exit code; -1 when a signal ended the process
  int signal = 0;  // the signal that ended it, or 0
  bool success() const { return code == 0; }
  // "exit status 3", "killed by signal 9 (SIGKILL)"
  std::string describe() const;
};

class Process {
 public:
  virtual ~Process() = default;
  virtual pid_t pid() const = 0;
  // Reads the child's output (stdout and stderr together); 0 at the end of the output,
  // which comes when every process holding the pipe has closed it. Throws
  // boost::system::system_error on cancellation and on a closed pipe.
  virtual boost::asio::awaitable<std::size_t> read_output(std::span<char> buffer) = 0;
  // Stops reading: the agent's end of the pipe is closed; writers get EPIPE.
  virtual void close_output() = 0;
  // Until the child has exited and been reaped. Cancellable.
  virtual boost::asio::awaitable<ExitStatus> wait() = 0;
  virtual std::optional<ExitStatus> exit_status() const = 0;
  // Sends `sig` to the child's process group (the child leads its own session and group).
  virtual void signal_group(int sig) = 0;
};

class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  // An error says which step failed: "cannot run /x/y.sh: Permission denied (exec)".
  virtual Result<std::unique_ptr<Process>> spawn(const SpawnSpec& spec) = 0;
  // The processes (other than this one) whose environment holds `marker` ("NAME=value"):
  // what a child left behind, also when it left its process group with setsid. Reads
  // /proc, which can block on a process stuck in the kernel: call it off the event loop.
  virtual std::vector<pid_t> find_marked(const std::string& marker) = 0;
  virtual void signal(pid_t pid, int sig) = 0;
};

class RealProcessRunner final : public ProcessRunner {
 public:
  // Reaps children from a SIGCHLD handler on `ex`. With `subreaper`, this process becomes
  // the child subreaper (PR_SET_CHILD_SUBREAPER): orphaned descendants are re-parented to
  // it instead of to PID 1, and reaped here.
  explicit RealProcessRunner(boost::asio::any_io_executor ex, bool subreaper = true);
  ~RealProcessRunner() override;

  Result<std::unique_ptr<Process>> spawn(const SpawnSpec& spec) override;
  std::vector<pid_t> find_marked(const std::string& marker) override;
  void signal(pid_t pid, int sig) override;

  // Processes reaped that this runner did not start (re-parented orphans).
  std::uint64_t orphans_reaped() const;

  struct Shared;

 private:
  std::shared_ptr<Shared> shared_;
};

}  // namespace instanced
