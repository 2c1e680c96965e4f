#include "tests/support/agent_process.hpp"

#include <array>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <fstream>
#include <netinet/in.h>
#include <poll.h>
#include <sstream>
#include <stdexcept>
#include <sys/mount.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>

namespace instanced::testing {

namespace {
std::string from_environment(const char* name, const char* otherwise) {
  const char* v = std::getenv(name);
  return v && *v ? v : otherwise;
}
}  // namespace

std::string agent_binary() { return from_environment("INSTANCED_TEST_AGENT", INSTANCED_BIN); }
std::string instancectl_binary() { return from_environment("INSTANCED_TEST_INSTANCECTL", INSTANCECTL_BIN); }
std::vector<std::string> agent_wrapper_from_environment() {
  std::string w = from_environment("INSTANCED_TEST_AGENT_WRAPPER", "");
  if (w.empty()) return {};
  return {w};
}

TempDir::TempDir() {
  std::string tmpl = "/tmp/instanced-test-XXXXXX";
  if (!mkdtemp(tmpl.data())) throw std::runtime_error("mkdtemp failed");
  path_ = tmpl;
  ::chmod(path_.c_str(), 0755);
}

// The NUL-separated strings of /proc/PID/cmdline or environ.
static std::vector<std::string> proc_strings(pid_t pid, const char* file) {
  std::string all = slurp("/proc/" + std::to_string(pid) + "/" + file);
  std::vector<std::string> out;
  for (std::size_t at = 0; at < all.size();) {
    std::size_t end = all.find('\0', at);
    if (end == std::string::npos) end = all.size();
    out.push_back(all.substr(at, end - at));
    at = end + 1;
  }
  return out;
}

// Whether one of `pid`'s open files is under `folder`.
static bool holds_file_in(pid_t pid, const std::string& folder) {
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc/" + std::to_string(pid) + "/fd", ec), end; !ec && it != end;
       it.increment(ec)) {
    std::error_code unreadable;
    if (std::filesystem::read_symlink(it->path(), unreadable).string().starts_with(folder)) return true;
  }
  return false;
}

std::vector<pid_t> workloads_in(const std::filesystem::path& dir) {
  std::vector<pid_t> found;
  const std::string folder = dir.string() + "/";
  const std::string socket = "INSTANCED_SOCKET=" + folder;
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    auto argv = proc_strings(pid, "cmdline");
    // A monitor on a run folder here; one started ahead (--spare) once it holds a file here.
    bool monitor = argv.size() == 2 && argv[0].ends_with("/instanced-run") &&
                   (argv[1].starts_with(folder) || (argv[1] == "--spare" && holds_file_in(pid, folder)));
    bool job = false;
    for (const auto& e : proc_strings(pid, "environ")) job = job || e.starts_with(socket);
    if (monitor || job) found.push_back(pid);
  }
  return found;
}

// SIGKILL to what the test left running under `dir`: its workloads, and every process with
// an argument naming something there (drivers, stand-ins). Whether any was found.
static bool kill_what_runs_in(const std::filesystem::path& dir) {
  const std::string below = dir.string() + "/";
  std::vector<pid_t> found = workloads_in(dir);
  std::error_code ec;
  for (std::filesystem::directory_iterator it("/proc", ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = std::stoi(name);
    for (const auto& arg : proc_strings(pid, "cmdline"))
      if (arg.find(below) != std::string::npos) {
        found.push_back(pid);
        break;
      }
  }
  bool any = false;
  for (pid_t pid : found) any = (pid != ::getpid() && ::kill(pid, SIGKILL) == 0) || any;
  return any;
}

void detach_mounts_under(const std::filesystem::path& dir) {
  const std::string below = dir.string() + "/";
  // The FUSE control file system, where connections are aborted (not always mounted).
  std::error_code ec;
  if (!std::filesystem::exists("/sys/fs/fuse/connections", ec) || std::filesystem::is_empty("/sys/fs/fuse/connections", ec))
    ::mount("fusectl", "/sys/fs/fuse/connections", "fusectl", 0, nullptr);
  std::ifstream in("/proc/self/mountinfo");
  std::vector<std::pair<std::string, std::string>> found;  // mount point, device's minor number
  for (std::string line; std::getline(in, line);) {
    std::istringstream fields(line);
    std::string id, parent, device, root, point;
    fields >> id >> parent >> device >> root >> point;
    if (point.starts_with(below)) found.emplace_back(point, device.substr(device.find(':') + 1));
  }
  for (auto it = found.rbegin(); it != found.rend(); ++it) {  // mountinfo lists parents first
    std::ofstream("/sys/fs/fuse/connections/" + it->second + "/abort") << "1";  // absent unless FUSE
    ::umount2(it->first.c_str(), MNT_DETACH);
  }
}

TempDir::~TempDir() {
  // What the agents of the test left running (monitors and their jobs outlive the agent),
  // and what they mounted: a driver started just before its agent was killed may mount
  // after the test's own clean-up.
  for (int round = 0; round < 100; ++round) {
    detach_mounts_under(path_);  // first: a process blocked in a hung mount dies only then
    if (!kill_what_runs_in(path_)) break;
    std::this_thread::sleep_for(20ms);
  }
  detach_mounts_under(path_);
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

void TempDir::write(const std::string& name, const std::string& content) const {
  std::filesystem::create_directories((path_ / name).parent_path());
  std::ofstream(path_ / name, std::ios::trunc) << content;
}

NotifySocket::NotifySocket(std::filesystem::path path) : path_(std::move(path)) {
  fd_ = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path_.c_str(), sizeof addr.sun_path - 1);
  ::unlink(path_.c_str());
  if (fd_ < 0 || ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    throw std::runtime_error("cannot bind notify socket " + path_.string() + ": " + std::strerror(errno));
}

NotifySocket::~NotifySocket() {
  if (fd_ >= 0) ::close(fd_);
  ::unlink(path_.c_str());
}

std::optional<std::string> NotifySocket::receive(std::chrono::milliseconds timeout) {
  pollfd p{fd_, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return std::nullopt;
  std::array<char, 4096> buf{};
  ssize_t n = ::recv(fd_, buf.data(), buf.size(), 0);
  if (n < 0) return std::nullopt;
  return std::string(buf.data(), static_cast<std::size_t>(n));
}

bool NotifySocket::wait_for(const std::string& what, std::chrono::milliseconds timeout, std::vector<std::string>* seen) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    auto msg = receive(left);
    if (!msg) return false;
    if (seen) seen->push_back(*msg);
    if (msg->find(what) != std::string::npos) return true;
  }
}

CommandResult run_command(const std::string& command_line) {
  CommandResult r;
  FILE* f = ::popen(command_line.c_str(), "r");
  if (!f) return r;
  std::array<char, 4096> buf{};
  std::size_t n;
  while ((n = std::fread(buf.data(), 1, buf.size(), f)) > 0) r.output.append(buf.data(), n);
  int status = ::pclose(f);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

int free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(fd);
  return ntohs(a.sin_port);
}

int connect_unix(const std::filesystem::path& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

std::string slurp(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string expand(std::string text, const TempDir& dir) {
  const std::string key = "{dir}";
  for (auto pos = text.find(key); pos != std::string::npos; pos = text.find(key, pos))
    text.replace(pos, key.size(), dir.path().string());
  return text;
}

AgentProcess::AgentProcess(const TempDir& dir, const std::string& config_yaml)
    : dir_(dir), notify_(dir / "notify.sock") {
  dir.write("instanced.yaml", expand(config_yaml, dir));
}

AgentProcess::~AgentProcess() {
  if (pid_ > 0 && running()) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

pid_t spawn(const std::vector<std::string>& args, const std::string& log, const std::map<std::string, std::string>& env) {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& [k, v] : env) {
      if (v.empty())
        ::unsetenv(k.c_str());
      else
        ::setenv(k.c_str(), v.c_str(), 1);
    }
    int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  return pid;
}

void AgentProcess::start(const std::map<std::string, std::string>& env, const std::vector<std::string>& extra_args) {
  std::vector<std::string> args = wrapper;
  for (auto& w : agent_wrapper_from_environment()) args.push_back(std::move(w));
  for (const auto& a : std::vector<std::string>{agent_binary(), "--config", config_file().string()}) args.push_back(a);
  args.insert(args.end(), extra_args.begin(), extra_args.end());
  // Not under systemd's journal, whatever the test runner's environment says.
  std::map<std::string, std::string> all{
      {"NOTIFY_SOCKET", notify_.path().string()}, {"JOURNAL_STREAM", ""}, {"INVOCATION_ID", ""}};
  for (const auto& [k, v] : env) all[k] = v;
  pid_ = spawn(args, log_file().string(), all);
}

bool AgentProcess::start_and_wait_ready(std::chrono::milliseconds timeout, const std::map<std::string, std::string>& env) {
  start(env);
  return notify_.wait_for("READY=1", timeout, &notifications);
}

void AgentProcess::signal(int sig) const { ::kill(pid_, sig); }

std::optional<int> AgentProcess::wait_exit(std::chrono::milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid_, &status, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    }
    if (std::chrono::steady_clock::now() > deadline) return std::nullopt;
    std::this_thread::sleep_for(10ms);
  }
}

bool AgentProcess::running() {
  if (pid_ <= 0) return false;
  int status = 0;
  if (::waitpid(pid_, &status, WNOHANG) == 0) return true;
  pid_ = -1;
  return false;
}

std::string AgentProcess::log() const {
  std::ifstream in(log_file());
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CommandResult AgentProcess::curl(const std::string& args) const {
  return run_command("curl -s --max-time 10 --unix-socket " + socket().string() + " " + args);
}

}  // namespace instanced::testing

namespace instanced::testing {

bool eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    if (pred()) return true;
    if (std::chrono::steady_clock::now() >= until) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

bool AgentProcess::wait_log(const std::string& text, std::chrono::milliseconds timeout) const {
  return eventually([&] { return log().find(text) != std::string::npos; }, timeout);
}

}  // namespace instanced::testing
