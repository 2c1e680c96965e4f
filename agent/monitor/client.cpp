#include "agent/monitor/client.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <csignal>
#include <cstring>
#include <fmt/format.h>
#include <sys/socket.h>
#include <unistd.h>

#include "agent/monitor/cgroup.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"
#include "common/syscalls.hpp"

namespace instanced::monitor {
namespace asio = boost::asio;
namespace fs = std::filesystem;

namespace {
constexpr std::size_t kMaxRecordBytes = 4 << 20;  // exit.json: the tail lines are capped by RunLog
constexpr auto kSpawnedBound = std::chrono::seconds(5);  // a spare's spawn of its workload
}  // namespace

asio::awaitable<SpareMonitor::Handed> SpareMonitor::take(const fs::path& dir) {
  auto p = std::move(process_);
  Fd socket = std::move(socket_);
  if (!p || p->exit_status()) co_return Handed{};  // none, or it ended (killed)
  const std::string line = dir.string() + "\n";
  // Into an empty socket buffer: all of it or nothing (it ended: closing the end is all).
  const auto sent = ::send(socket.get(), line.data(), line.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
  if (sent != static_cast<ssize_t>(line.size())) co_return Handed{};
  // Its answer, or the end of its socket (a dying spare's threads may still hold it when
  // the send went in): only a spare that answered runs the folder.
  asio::posix::stream_descriptor answer(co_await asio::this_coro::executor, socket.release());
  char taken = 0;
  boost::system::error_code ec;
  const std::size_t n = co_await answer.async_read_some(asio::buffer(&taken, 1), asio::redirect_error(asio::use_awaitable, ec));
  if (n != 1 || taken != kSpareTaken) co_return Handed{};
  co_return Handed{std::move(p), Fd(answer.release())};
}

asio::awaitable<void> SpareMonitor::spawned(Fd channel, Clock& clock, Duration bound) {
  using namespace asio::experimental::awaitable_operators;
  asio::posix::stream_descriptor told(co_await asio::this_coro::executor, channel.release());
  char byte = 0;
  boost::system::error_code ec;
  auto read = told.async_read_some(asio::buffer(&byte, 1), asio::redirect_error(asio::use_awaitable, ec));
  auto limit = clock.sleep_for(bound);
  auto either = std::move(read) || std::move(limit);
  co_await first_error(std::move(either));
}

Result<void> SpareMonitor::refill(ProcessRunner& runner, SpawnSpec spec) {
  if (process_ && !process_->exit_status()) return {};
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0)
    return Error{fmt::format("cannot start a spare monitor: socketpair: {}", std::strerror(errno))};
  Fd mine(ends[0]);
  Fd its(ends[1]);
  spec.inherit_fd = its.get();
  auto child = runner.spawn(spec);
  if (!child) return Error{fmt::format("cannot start a spare monitor: {}", child.error().message)};
  process_ = std::move(*child);
  socket_ = std::move(mine);
  return {};
}

Launcher default_launcher(std::string slice, bool spare) {
  Launcher l;
  std::error_code ec;
  fs::path self = fs::read_symlink("/proc/self/exe", ec);
  l.program = ec ? std::string("/usr/sbin/") + std::string(kProgram) : (self.parent_path() / kProgram).string();
  const char* invocation = std::getenv("INVOCATION_ID");
  if (invocation && *invocation && fs::exists("/run/systemd/system", ec)) l.systemd_run = find_program("systemd-run");
  l.slice = std::move(slice);
  l.cgroup_unified = cgroup_v2_only();
  if (spare && l.systemd_run.empty()) l.spare = std::make_shared<SpareMonitor>();
  return l;
}

asio::awaitable<Result<Run>> Run::launch(ProcessRunner& runner, Filesystem& files, Clock& clock, Launcher launcher,
                                         fs::path dir, std::string unit, WorkloadSpec spec) {
  std::error_code ec;
  fs::remove_all(dir, ec);  // an earlier attempt's files: never read as this run's
  spec.own_cgroup = !launcher.systemd_run.empty();
  if (auto r = files.create_directories(dir, 0700); !r) co_return r.error();
  // No fsync: after a crash of the machine the monitor is gone too, and the spec is not read.
  if (auto r = files.write_file_atomic(dir / kSpecFile, spec.to_text(), 0600, false); !r) co_return r.error();
  SpawnSpec s;
  s.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"};
  if (launcher.systemd_run.empty()) {
    s.argv = {launcher.program, dir.string()};
    s.capture_output = false;
    s.inherit_stderr = true;  // its messages (and, without the journal, the output's lines) beside the agent's
    SpareMonitor::Handed handed;
    if (launcher.spare) handed = co_await launcher.spare->take(dir);
    std::unique_ptr<Process> child = std::move(handed.monitor);
    if (!child) {
      auto started = runner.spawn(s);
      if (!started)
        co_return Error{fmt::format("cannot start the monitor {}: {}", launcher.program, started.error().message)};
      child = std::move(*started);
    }
    if (launcher.spare) {  // the next one, once this one's workload is spawned
      if (handed.channel) co_await SpareMonitor::spawned(std::move(handed.channel), clock, kSpawnedBound);
      s.argv = {launcher.program, std::string(kSpareArgument)};
      (void)launcher.spare->refill(runner, std::move(s));  // else the next launch starts one afresh
    }
    co_return Run(dir, std::move(child), std::nullopt);
  }
  // A transient service in the slice; gone once it has ended (--collect).
  s.argv = {launcher.systemd_run, "--unit=" + unit, "--slice=" + launcher.slice, "--collect", "--quiet",
            "--description=instanced: " + spec.name};
  for (const auto& p : launcher.properties) s.argv.push_back("--property=" + p);
  s.argv.insert(s.argv.end(), {"--", launcher.program, dir.string()});
  auto ran = co_await run_command(runner, clock, std::move(s), std::chrono::seconds(30));
  if (!ran) co_return Error{fmt::format("cannot start the monitor as {}: {}", unit, ran.error().message)};
  if (!ran->status.success())
    co_return Error{fmt::format("cannot start the monitor as {}: systemd-run: {}: {}", unit, ran->status.describe(),
                                ran->last_line())};
  co_return Run(dir, nullptr, std::nullopt, unit);
}

Run::Found Run::find(Filesystem& files, const fs::path& dir) {
  if (auto text = files.read_file(dir / kExitFile, kMaxRecordBytes)) {
    auto e = WorkloadExit::parse(*text);
    if (e) return std::move(*e);
    return Gone{e.error().message};
  }
  auto text = files.read_file(dir / kMonitorFile, 64 << 10);
  if (!text) return Gone{"its monitor recorded neither its start nor its end"};
  auto info = MonitorInfo::parse(*text);
  if (!info) return Gone{info.error().message};
  if (monitor_running(*info)) return Run(dir, nullptr, *info);
  // It may have written the end between the two looks.
  if (auto again = files.read_file(dir / kExitFile, kMaxRecordBytes))
    if (auto e = WorkloadExit::parse(*again)) return std::move(*e);
  return Gone{fmt::format("its monitor (pid {}) ended without recording how the workload ended", info->pid)};
}

pid_t Run::pid() const { return child_ ? child_->pid() : info_ ? info_->pid : 0; }

asio::awaitable<void> Run::until_known(Clock& clock, Filesystem& files) {
  const auto limit = clock.now() + kStartLimit;
  while (!info_ && clock.now() < limit) {
    if (files.read_file(dir_ / kExitFile, kMaxRecordBytes)) co_return;
    if (auto text = files.read_file(dir_ / kMonitorFile, 64 << 10))
      if (auto info = MonitorInfo::parse(*text)) {
        info_ = *info;
        if (cancel_asked_ && monitor_running(*info_)) ::kill(info_->pid, SIGTERM);
        co_return;
      }
    co_await clock.sleep_for(std::chrono::milliseconds(50));
  }
}

asio::awaitable<void> Run::ended(asio::any_io_executor ex, Clock& clock, Filesystem& files,
                                 Clock::steady_time::duration poll) {
  if (child_) {
    auto keep = child_;  // the run may be moved while this waits
    (void)co_await keep->wait();
    co_return;
  }
  if (!info_) co_await until_known(clock, files);
  if (!info_) co_return;  // it recorded its end first, or never started
  const MonitorInfo info = *info_;
  if (co_await ended_by_pidfd(ex)) co_return;
  while (monitor_running(info)) co_await clock.sleep_for(poll);
}

// True once the monitor has exited, seen through a pidfd; false when the kernel has none.
asio::awaitable<bool> Run::ended_by_pidfd(asio::any_io_executor ex) {
  const MonitorInfo info = *info_;
  const int fd = sys::pidfd_open(info.pid);
  if (fd < 0) co_return errno != ENOSYS;  // ESRCH: already gone
  asio::posix::stream_descriptor d(ex, fd);
  if (!monitor_running(info)) co_return true;  // the pid was reused before the open
  boost::system::error_code ec;
  co_await d.async_wait(asio::posix::descriptor_base::wait_read, asio::redirect_error(asio::use_awaitable, ec));
  if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
  co_return true;
}

Result<WorkloadExit> Run::exit_record(Filesystem& files) const {
  auto text = files.read_file(dir_ / kExitFile, kMaxRecordBytes);
  if (!text && !unit_.empty() && !info_)
    return Error{fmt::format("its monitor (unit {}) did not start within {}s", unit_, kStartLimit.count())};
  if (!text && child_ && child_->exit_status())
    return Error{fmt::format("its monitor (pid {}) ended without recording how the workload ended: {}", child_->pid(),
                             child_->exit_status()->describe())};
  if (!text) return Error{"its monitor ended without recording how the workload ended"};
  return WorkloadExit::parse(*text);
}

void Run::cancel(Filesystem& files) {
  cancel_asked_ = true;
  (void)files.write_file_atomic(dir_ / kCancelFile, "", 0600);
  if (child_) {
    if (!child_->exit_status()) ::kill(child_->pid(), SIGTERM);
  } else if (info_ && monitor_running(*info_)) {
    ::kill(info_->pid, SIGTERM);
  }
}

std::optional<LogChunk> Run::read_log(const fs::path& log_file, std::uint64_t from, std::size_t max) const {
  return read_live_log(log_file, dir_ / kLiveTailFile, from, max);
}

}  // namespace instanced::monitor
