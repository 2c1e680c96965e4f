#include "common/process.hpp"

#include "common/fs.hpp"
#include "common/sanitizers.hpp"
#include "common/syscalls.hpp"
#include "common/wake.hpp"

#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <dirent.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <grp.h>
#include <map>
#include <pwd.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

namespace instanced {
namespace asio = boost::asio;

std::string ExitStatus::describe() const {
  if (signal != 0) {
    const char* name = sys::signal_abbrev(signal);
    return name ? fmt::format("killed by signal {} (SIG{})", signal, name) : fmt::format("killed by signal {}", signal);
  }
  return fmt::format("exit status {}", code);
}

namespace {

// The identity of a passwd entry, with its supplementary groups.
Result<UserIdentity> identity_of(const passwd& pw) {
  const std::string name = pw.pw_name;
  UserIdentity u{name, pw.pw_uid, pw.pw_gid, {}, pw.pw_dir ? pw.pw_dir : "/", pw.pw_shell ? pw.pw_shell : "/bin/sh"};
  int n = 64;
  for (;;) {
    u.groups.resize(static_cast<std::size_t>(n));
    int got = n;
    if (::getgrouplist(pw.pw_name, pw.pw_gid, u.groups.data(), &got) >= 0) {
      u.groups.resize(static_cast<std::size_t>(got));
      break;
    }
    if (got <= n || n > 65536) return Error{fmt::format("cannot list the groups of user '{}'", name)};
    n = got;
  }
  return u;
}

std::vector<char> passwd_buffer() {
  long size = ::sysconf(_SC_GETPW_R_SIZE_MAX);
  return std::vector<char>(size > 0 ? static_cast<std::size_t>(size) : 16384);
}

}  // namespace

Result<UserIdentity> lookup_user(const std::string& name) {
  std::vector<char> buf = passwd_buffer();
  passwd pw{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = ::getpwnam_r(name.c_str(), &pw, buf.data(), buf.size(), &found)) == ERANGE && buf.size() < (1 << 20))
    buf.resize(buf.size() * 2);
  if (rc != 0) return Error{fmt::format("cannot look up user '{}': {}", name, std::strerror(rc))};
  if (!found) return Error{fmt::format("user '{}' does not exist", name)};
  return identity_of(pw);
}

Result<UserIdentity> lookup_user(uid_t uid) {
  std::vector<char> buf = passwd_buffer();
  passwd pw{};
  passwd* found = nullptr;
  int rc = 0;
  while ((rc = ::getpwuid_r(uid, &pw, buf.data(), buf.size(), &found)) == ERANGE && buf.size() < (1 << 20))
    buf.resize(buf.size() * 2);
  if (rc != 0) return Error{fmt::format("cannot look up uid {}: {}", uid, std::strerror(rc))};
  if (!found) return Error{fmt::format("uid {} has no user", uid)};
  return identity_of(pw);
}

namespace {

struct ChildExit {
  explicit ChildExit(asio::any_io_executor ex) : waiter(std::move(ex)) {}
  std::optional<ExitStatus> status;
  Wake waiter;  // pulsed when the status arrives
};

}  // namespace

// The reaper: one SIGCHLD handler for every child of this process.
struct RealProcessRunner::Shared : std::enable_shared_from_this<Shared> {
  explicit Shared(asio::any_io_executor e) : ex(e), signals(e, SIGCHLD) {}

  asio::any_io_executor ex;
  asio::signal_set signals;
  std::map<pid_t, std::shared_ptr<ChildExit>> children;
  std::uint64_t orphans = 0;
  bool stopped = false;

  void arm() {
    signals.async_wait([self = weak_from_this()](const boost::system::error_code& ec, int) {
      auto s = self.lock();
      if (!s || ec == asio::error::operation_aborted || s->stopped) return;
      s->reap();
      s->arm();
    });
  }

  void reap() {
    for (;;) {
      int st = 0;
      pid_t pid = ::waitpid(-1, &st, WNOHANG);
      if (pid <= 0) return;  // 0: children left but none exited; -1/ECHILD: none left
      auto it = children.find(pid);
      if (it == children.end()) {
        ++orphans;
        continue;
      }
      ExitStatus s;
      if (WIFEXITED(st)) s.code = WEXITSTATUS(st);
      if (WIFSIGNALED(st)) s.signal = WTERMSIG(st);
      it->second->status = s;
      it->second->waiter.pulse();
      children.erase(it);
    }
  }
};

namespace {

class RealProcess final : public Process {
 public:
  RealProcess(asio::any_io_executor ex, pid_t pid, int out_fd, std::shared_ptr<ChildExit> exit)
      : pid_(pid), out_(ex), exit_(std::move(exit)) {
    if (out_fd >= 0) out_.assign(out_fd);
  }
  ~RealProcess() override { close_output(); }

  pid_t pid() const override { return pid_; }

  asio::awaitable<std::size_t> read_output(std::span<char> buffer) override {
    if (!out_.is_open()) co_return 0;
    boost::system::error_code ec;
    std::size_t n = co_await out_.async_read_some(asio::buffer(buffer.data(), buffer.size()),
                                                  asio::redirect_error(asio::use_awaitable, ec));
    if (ec == asio::error::eof) co_return 0;
    if (ec) throw boost::system::system_error(ec);
    co_return n;
  }

  void close_output() override {
    boost::system::error_code ignored;
    if (out_.is_open()) out_.close(ignored);
  }

  asio::awaitable<ExitStatus> wait() override {
    while (!exit_->status) co_await exit_->waiter.wait();  // throws when this coroutine is cancelled
    co_return *exit_->status;
  }

  std::optional<ExitStatus> exit_status() const override { return exit_->status; }

  void signal_group(int sig) override {
    // Once reaped, the pid (and the group id) may belong to someone else: only while the
    // child is known alive or a zombie. Members of the group that outlived the leader are
    // still in the group; kill(-pgid) reaches them as long as one of them exists.
    ::kill(-pid_, sig);
  }

 private:
  pid_t pid_;
  asio::posix::stream_descriptor out_;
  std::shared_ptr<ChildExit> exit_;
};

// Between the start and exec only async-signal-safe calls, no change to memory but its own
// stack (it shares the agent's: start_child). Reports a failure as
// {step, errno} on `err_fd` and exits 127.
[[noreturn]] void exec_child(const SpawnSpec& spec, char* const* argv, char* const* envp, int out_w, int err_fd) {
  auto fail = [&](int step) {
    int msg[2] = {step, errno};
    [[maybe_unused]] auto n = ::write(err_fd, msg, sizeof msg);
    ::_exit(127);
  };
  ::setsid();
  // Dispositions the agent set (SIGPIPE ignored, handlers) and its signal mask must not
  // leak into the script: `yes | head` must end by SIGPIPE.
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; ++s) ::sigaction(s, &dfl, nullptr);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  int null_fd = ::open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) fail(0);
  if (::dup2(null_fd, 0) < 0) fail(0);
  int out = out_w >= 0 ? out_w : null_fd;
  const bool keep_stderr = out_w < 0 && spec.inherit_stderr;
  if (::dup2(out, 1) < 0 || (!keep_stderr && ::dup2(out, 2) < 0)) fail(0);
  // The error pipe moves above the fds the child gets, so fd 3 can be given.
  int high = ::fcntl(err_fd, F_DUPFD_CLOEXEC, 10);
  if (high >= 0) err_fd = high;
  int first_closed = 3;
  if (spec.inherit_fd >= 0) {
    if (spec.inherit_fd == 3) {
      ::fcntl(3, F_SETFD, 0);
    } else if (::dup2(spec.inherit_fd, 3) < 0) {
      fail(0);
    }
    first_closed = 4;
  }
  // Everything else the agent holds stays behind (sockets, the journal, state files):
  // close all but the error pipe, which closes itself at exec.
  if (err_fd > first_closed) sys::close_range(static_cast<unsigned>(first_closed), static_cast<unsigned>(err_fd - 1));
  sys::close_range(static_cast<unsigned>(std::max(err_fd + 1, first_closed)), ~0u);
  // The agent protects itself from the OOM killer (OOMScoreAdjust=-500 in its unit);
  // its children must not inherit that. Raising the value needs no privilege.
  if (int oom = ::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC); oom >= 0) {
    [[maybe_unused]] auto n = ::write(oom, "0", 1);
    ::close(oom);
  }
  for (const auto& [resource, value] : spec.limits) {
    struct rlimit rl {};
    rl.rlim_cur = rl.rlim_max = static_cast<rlim_t>(value);
    if (::setrlimit(resource, &rl) != 0) fail(6);
  }
  if (spec.nice != 0 && ::setpriority(PRIO_PROCESS, 0, spec.nice) != 0) fail(7);
  // The system calls themselves: glibc's wrappers run its set-id broadcast over the
  // thread list of the agent, whose memory this child shares until it execs.
  if (spec.user) {
    if (::syscall(SYS_setgroups, spec.user->groups.size(), spec.user->groups.data()) != 0) fail(1);
    if (::syscall(SYS_setgid, spec.user->gid) != 0) fail(2);
    if (::syscall(SYS_setuid, spec.user->uid) != 0) fail(3);
  }
  if (::chdir(spec.cwd.c_str()) != 0) fail(4);
  ::execve(argv[0], argv, envp);
  fail(5);
  ::_exit(127);
}

struct ChildArgs {
  const SpawnSpec* spec;
  char* const* argv;
  char* const* envp;
  int out_w;
  int err_fd;
};

int child_main(void* p) {
  const auto* a = static_cast<const ChildArgs*>(p);
  exec_child(*a->spec, a->argv, a->envp, a->out_w, a->err_fd);
}

// The child shares the caller's memory and the caller waits until it has exec'd or exited
// (vfork's way: no copy of the agent's page tables, which fork() took 0.3 ms to make). It
// runs on a stack of its own, with every signal blocked until it has reset their handlers:
// no handler of the agent's may run in it. The sanitizers cannot follow a child in shared
// memory (AddressSanitizer's shadow of the child's stack frames would stay poisoned in the
// parent's): their builds fork; the dev, release and portable builds take this path.
pid_t start_child(ChildArgs& args) {
#if defined(INSTANCED_TSAN) || defined(INSTANCED_ASAN)
  pid_t pid = ::fork();
  if (pid == 0) child_main(&args);
  return pid;
#else
  constexpr std::size_t kStack = 256 << 10;
  void* stack = ::mmap(nullptr, kStack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
  if (stack == MAP_FAILED) return -1;
  sigset_t all, before;
  sigfillset(&all);
  ::pthread_sigmask(SIG_SETMASK, &all, &before);
  pid_t pid = ::clone(child_main, static_cast<char*>(stack) + kStack, CLONE_VM | CLONE_VFORK | SIGCHLD, &args);
  const int error = errno;
  ::pthread_sigmask(SIG_SETMASK, &before, nullptr);
  ::munmap(stack, kStack);
  errno = error;
  return pid;
#endif
}

const char* step_name(int step) {
  switch (step) {
    case 0: return "standard streams";
    case 1: return "setgroups";
    case 2: return "setgid";
    case 3: return "setuid";
    case 4: return "working directory";
    case 6: return "resource limits";
    case 7: return "priority";
    default: return "exec";
  }
}

}  // namespace

RealProcessRunner::RealProcessRunner(asio::any_io_executor ex, bool subreaper) : shared_(std::make_shared<Shared>(ex)) {
  if (subreaper) ::prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  shared_->arm();
}

RealProcessRunner::~RealProcessRunner() {
  shared_->stopped = true;
  boost::system::error_code ignored;
  shared_->signals.cancel(ignored);
}

std::uint64_t RealProcessRunner::orphans_reaped() const { return shared_->orphans; }

Result<std::unique_ptr<Process>> RealProcessRunner::spawn(const SpawnSpec& spec) {
  if (spec.argv.empty() || spec.argv.front().empty() || spec.argv.front().front() != '/')
    return Error{"the program must be an absolute path"};
  // Everything the child needs is prepared before it starts: the child must not allocate.
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  // The pipes' ends are closed in the parent only: the child never returns from exec_child
  // (it execs or calls _exit), so no destructor runs there.
  int out[2] = {-1, -1};
  if (spec.capture_output && ::pipe2(out, O_CLOEXEC) != 0)
    return Error{fmt::format("cannot create a pipe: {}", std::strerror(errno))};
  Fd out_r(out[0]), out_w(out[1]);
  int err[2];
  if (::pipe2(err, O_CLOEXEC) != 0) return Error{fmt::format("cannot create a pipe: {}", std::strerror(errno))};
  Fd err_r(err[0]), err_w(err[1]);
  ChildArgs args{&spec, argv.data(), envp.data(), out_w.get(), err_w.get()};
  pid_t pid = start_child(args);
  if (pid < 0) return Error{fmt::format("cannot start a process: {}", std::strerror(errno))};

  // Registered before anything can run the SIGCHLD handler (it runs on this thread).
  auto exit = std::make_shared<ChildExit>(shared_->ex);
  shared_->children[pid] = exit;
  out_w.reset();
  err_w.reset();
  int msg[2] = {0, 0};
  ssize_t n;
  do n = ::read(err_r.get(), msg, sizeof msg);
  while (n < 0 && errno == EINTR);
  err_r.reset();
  if (n == static_cast<ssize_t>(sizeof msg)) {
    // The child exits 127 right away; the reaper collects it.
    return Error{fmt::format("cannot run {}: {} ({})", spec.argv.front(), std::strerror(msg[1]), step_name(msg[0]))};
  }
  if (out_r) ::fcntl(out_r.get(), F_SETFL, ::fcntl(out_r.get(), F_GETFL) | O_NONBLOCK);
  // The process's stream descriptor owns the read end from here on.
  return std::unique_ptr<Process>(std::make_unique<RealProcess>(shared_->ex, pid, out_r.release(), exit));
}

std::vector<pid_t> RealProcessRunner::find_marked(const std::string& marker) {
  std::vector<pid_t> found;
  DIR* proc = ::opendir("/proc");
  if (!proc) return found;
  const pid_t self = ::getpid();
  std::string env;
  while (dirent* d = ::readdir(proc)) {
    char* end = nullptr;
    long pid = std::strtol(d->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == self) continue;
    Fd fd(::open(fmt::format("/proc/{}/environ", pid).c_str(), O_RDONLY | O_CLOEXEC));
    if (!fd) continue;
    env.clear();
    char buf[8192];
    ssize_t n;
    while ((n = ::read(fd.get(), buf, sizeof buf)) > 0 && env.size() < (1 << 20))
      env.append(buf, static_cast<std::size_t>(n));
    // Entries are NUL-separated; the marker must be a whole entry.
    for (std::size_t pos = 0; pos < env.size();) {
      std::size_t e = env.find('\0', pos);
      if (e == std::string::npos) e = env.size();
      if (std::string_view(env).substr(pos, e - pos) == marker) {
        found.push_back(static_cast<pid_t>(pid));
        break;
      }
      pos = e + 1;
    }
  }
  ::closedir(proc);
  return found;
}

void RealProcessRunner::signal(pid_t pid, int sig) { ::kill(pid, sig); }

std::map<std::string, std::string> login_environment(const UserIdentity& user) {
  return {
      {"PATH", user.uid == 0 ? "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" : "/usr/local/bin:/usr/bin:/bin"},
      {"HOME", user.home},
      {"USER", user.name},
      {"LOGNAME", user.name},
      {"SHELL", user.shell},
      {"LANG", "C.UTF-8"},
  };
}

std::vector<std::string> environment_entries(const std::map<std::string, std::string>& env) {
  std::vector<std::string> out;
  out.reserve(env.size());
  for (const auto& [k, v] : env) out.push_back(k + "=" + v);
  return out;
}

std::string find_program(const std::string& name, const std::string& search_path) {
  auto executable = [](const std::string& p) {
    struct stat st {};
    return ::stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(p.c_str(), X_OK) == 0;
  };
  if (name.empty()) return "";
  if (name.find('/') != std::string::npos) return executable(name) ? name : "";
  std::string dirs = search_path;
  if (dirs.empty()) {
    const char* path = std::getenv("PATH");
    dirs = path && *path ? path : "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
  }
  std::size_t pos = 0;
  while (pos <= dirs.size()) {
    auto colon = dirs.find(':', pos);
    if (colon == std::string::npos) colon = dirs.size();
    std::string dir = dirs.substr(pos, colon - pos);
    if (!dir.empty() && dir.front() == '/' && executable(dir + "/" + name)) return dir + "/" + name;
    pos = colon + 1;
  }
  return "";
}

}  // namespace instanced
