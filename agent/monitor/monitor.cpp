#include "agent/monitor/monitor.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fcntl.h>
#include <poll.h>
#include <fmt/format.h>
#include <optional>
#include <unistd.h>

#include "agent/monitor/cgroup.hpp"
#include "agent/monitor/workload.hpp"
#include "common/blocking_pool.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/syscalls.hpp"
#include "common/wake.hpp"

namespace instanced::monitor {
namespace asio = boost::asio;
namespace fs = std::filesystem;
using namespace asio::experimental::awaitable_operators;

namespace {

void set_cancel_signals_blocked(bool blocked) {
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  ::sigprocmask(blocked ? SIG_BLOCK : SIG_UNBLOCK, &set, nullptr);
}

constexpr auto kDrainGrace = std::chrono::milliseconds(250);  // output read after the exit
constexpr std::size_t kMaxSpecBytes = 1 << 20;

// One run: the spec, the workload's process and its log, and how it ended.
class Monitor {
 public:
  // What does not depend on the workload: made by a spare before it is handed its folder.
  Monitor()
      : runner_(ctx_.get_executor()),
        pool_(1),
        cancel_(ctx_.get_executor()),
        pump_done_(ctx_.get_executor(), "output") {}

  int run(fs::path dir, WorkloadSpec spec) {
    dir_ = std::move(dir);
    spec_ = std::move(spec);
    logging_.emplace(spec_.journal ? LogTarget::journald : LogTarget::stderr_lines, LogLevel::info);
    log_ = logging_->get("monitor");
    if (exists(kCancelFile)) return record(not_started("cancelled before it started", Outcome::cancelled));
    auto sink = [this](std::string_view line) {
      logging_->workload_line(log_, spdlog::level::info, spec_.journal_identifier, {spec_.journal_field, spec_.journal_value},
                             line);
    };
    RunLog::LineSink lines = spec_.journal_identifier.empty() ? RunLog::LineSink{} : RunLog::LineSink{sink};
    SpawnSpec spawn = spec_.spawn;
    spawn.capture_output = true;
    spawn.inherit_fd = -1;
    if (spec_.own_cgroup) oom_kills_before_ = own_oom_kills();
    auto script = hold_inline_script();
    if (script && *script) spawn.inherit_fd = script->get();
    auto child = script ? runner_.spawn(spawn) : Result<std::unique_ptr<Process>>(script.error());
    tell_spawned();
    // The log and its shared tail are made once the workload runs (its output waits in the
    // pipe meanwhile): the job need not wait for two files to be made.
    log_file_ = std::make_unique<RunLog>(spec_.log_file, spec_.max_log_bytes, spec_.tail_lines, lines, dir_ / kLiveTailFile);
    if (!child) {
      log_file_->feed(fmt::format("[instanced: {}]\n", child.error().message));
      return record(not_started(child.error().message, Outcome::not_started));
    }
    proc_ = std::move(*child);
    // Without it an agent started later cannot take the run back (it reports it lost); the
    // agent that started this monitor still sees its end.
    (void)write(kMonitorFile, whoami().to_text(), false);
    // Its handler from here on (a spare's wait left SIGTERM's default: it ended the spare).
    signals_.emplace(ctx_.get_executor(), SIGTERM, SIGINT);
    signals_->async_wait([this](const boost::system::error_code& ec, int) {
      if (!ec) cancel();
    });
    set_cancel_signals_blocked(false);  // one sent since the start is delivered now
    asio::co_spawn(ctx_, supervise(), asio::detached);
    ctx_.run();
    return result_;
  }

  // A spare's channel to the agent: told once the workload is spawned (its end, at the
  // latest, when this monitor exits).
  void tell_when_spawned(Fd channel) { spawned_channel_ = std::move(channel); }

 private:
  void tell_spawned() {
    if (!spawned_channel_) return;
    (void)!::write(spawned_channel_.get(), &kSpareSpawned, 1);  // an agent gone meanwhile needs nothing
    spawned_channel_.reset();
  }

  bool exists(std::string_view name) const {
    std::error_code ec;
    return fs::exists(dir_ / name, ec);
  }

  // exit.json durable (the end must survive the machine); monitor.json need not be: after a
  // crash of the machine its monitor is gone whatever the file says.
  bool write(std::string_view name, const std::string& text, bool durable = true) {
    auto w = files_.write_file_atomic(dir_ / name, text, 0600, durable);
    if (!w) log_->error("{}: {}", spec_.name, w.error().message);
    return static_cast<bool>(w);
  }

  // The spec's inline script in a sealed memfd (none without one): the workload's fd 3.
  Result<Fd> hold_inline_script() const {
    if (spec_.inline_script.empty()) return Fd{};
    Fd fd(sys::memfd_create("instanced-script", true));
    if (!fd || !write_all(fd.get(), spec_.inline_script))
      return Error{fmt::format("cannot hold the inline script: {}", std::strerror(errno))};
    sys::seal_memfd(fd.get());
    ::lseek(fd.get(), 0, SEEK_SET);
    return fd;
  }

  MonitorInfo whoami() const {
    MonitorInfo m;
    m.pid = ::getpid();
    m.start_ticks = process_start_ticks(m.pid).value_or(0);
    m.child = proc_->pid();
    m.started = clock_.wall_now();
    return m;
  }

  WorkloadExit not_started(std::string reason, Outcome outcome) {
    WorkloadExit e;
    e.outcome = outcome;
    e.reason = std::move(reason);
    return e;
  }

  void cancel() {
    cancelled_ = true;
    cancel_.pulse();
  }

  // Until the workload has ended (or was stopped), its output read, what it left stopped.
  asio::awaitable<void> supervise() {
    WorkloadExit e;
    {
      auto pump = pump_output(*proc_, *log_file_, pump_done_);
      auto watch = watch_process();
      auto both = std::move(pump) && std::move(watch);
      e.status = co_await first_error(std::move(both));
    }
    e.outcome = cancelled_ ? Outcome::cancelled : timed_out_ ? Outcome::timed_out : Outcome::exited;
    e.out_of_memory = killed_for_memory();
    const bool keep = spec_.keep_left_behind && e.outcome == Outcome::exited;
    if (!spec_.marker.empty() && !keep)
      e.left_behind = co_await stop_marked(runner_, pool_, clock_, log_, spec_.marker, spec_.kill_grace);
    result_ = record(std::move(e));
    signals_->cancel();
    ctx_.stop();
  }

  // The process's end; on the deadline or a cancel it is stopped first.
  asio::awaitable<ExitStatus> watch_process() {
    Process& p = *proc_;
    std::optional<ExitStatus> status;
    while (!status && !cancelled_) {
      auto exit = p.wait();
      auto limit = clock_.sleep_until(deadline());
      auto poked = cancel_.wait();
      auto any = std::move(exit) || std::move(limit) || std::move(poked);
      auto r = co_await first_error(std::move(any));
      if (r.index() == 0) status = std::get<0>(r);
      if (r.index() == 1 && !(status = p.exit_status())) {
        timed_out_ = true;
        break;
      }
    }
    if (!status) status = co_await stop(p);
    co_await finish_output(p, pump_done_, clock_, kDrainGrace);
    co_return *status;
  }

  // Whether the unit's OOM-kill counter grew while the workload ran.
  bool killed_for_memory() const {
    if (!oom_kills_before_) return false;
    auto now = own_oom_kills();
    return now && *now > *oom_kills_before_;
  }

  asio::awaitable<ExitStatus> stop(Process& p) {
    log_->info("{}: stopping it ({})", spec_.name, timed_out_ ? "timed out" : "cancelled");
    p.signal_group(SIGTERM);
    if (auto s = co_await exit_within(p, clock_, spec_.kill_grace)) co_return *s;
    p.signal_group(SIGKILL);
    if (auto s = co_await exit_within(p, clock_, spec_.kill_grace)) co_return *s;
    log_->error("{}: did not end even after SIGKILL (stuck in the kernel?)", spec_.name);
    co_return ExitStatus{-1, SIGKILL};
  }

  Clock::steady_time deadline() const {
    if (spec_.timeout == Duration::zero()) return Clock::steady_time::max();
    auto left = spec_.timeout - std::chrono::duration_cast<Duration>(clock_.wall_now() - spec_.started);
    return clock_.now() + std::max(left, Duration::zero());
  }

  // The log closed and the end written; the shared tail goes with the log's finish.
  int record(WorkloadExit e) {
    if (log_file_) {
      e.layout = log_file_->finish();
      e.tail = log_file_->last_lines();
    }
    e.ended = clock_.wall_now();
    return write(kExitFile, e.to_text()) ? 0 : 1;
  }

  fs::path dir_;
  WorkloadSpec spec_;
  asio::io_context ctx_;
  RealClock clock_;
  RealFilesystem files_;
  RealProcessRunner runner_;
  BlockingPool pool_;
  std::optional<Logging> logging_;  // as the spec asks
  Logger log_;
  Wake cancel_;
  Gate pump_done_;
  std::optional<asio::signal_set> signals_;  // made when the workload starts
  std::unique_ptr<RunLog> log_file_;
  std::unique_ptr<Process> proc_;
  bool cancelled_ = false;
  bool timed_out_ = false;
  std::optional<std::uint64_t> oom_kills_before_;  // own_cgroup: the counter at the start
  Fd spawned_channel_;                              // a spare's fd 3, until the workload is spawned
  int result_ = 1;
};

// The monitor protects itself from the OOM killer as the agent does: the workload (whose
// score the runner resets to 0) goes first, and the end is still recorded.
void protect_from_oom() {
  if (Fd f(::open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC)); f) (void)write_all(f.get(), "-500");
}

// A cancel sent before the handler is in place waits, blocked, instead of killing the
// monitor before it has recorded anything.
void prepare_process() {
  set_cancel_signals_blocked(true);
  std::signal(SIGPIPE, SIG_IGN);
  std::signal(SIGHUP, SIG_IGN);  // no terminal: the session's end is not the workload's
  protect_from_oom();
}

// The folder's workload run by `m`; a spec it cannot read recorded as not started.
int run_folder(Monitor& m, const fs::path& run_dir) {
  auto text = read_regular_file(run_dir / kSpecFile, kMaxSpecBytes);
  auto spec = text ? WorkloadSpec::parse(*text) : Result<WorkloadSpec>(text.error());
  if (!spec) {
    WorkloadExit e;
    e.outcome = Outcome::not_started;
    e.reason = spec.error().message;
    e.ended = std::chrono::system_clock::now();
    RealFilesystem files;
    return files.write_file_atomic(run_dir / kExitFile, e.to_text(), 0600) ? 0 : 1;
  }
  return m.run(run_dir, std::move(*spec));
}

// The run folder a spare is handed on fd 3: empty when the agent closed its end first.
// SIGTERM and SIGINT are let through while nothing is handed (their default action ends
// the spare: no job is cancelled by a signal meant for an idle spare), and blocked again
// from the moment there is something to read; one that came with the folder still ends
// the spare, which then does not answer (the agent starts a monitor afresh).
constexpr int kFolderFd = 3;

std::string wait_for_folder() {
  constexpr std::size_t kMaxLine = 4096;
  sigset_t none;
  sigemptyset(&none);
  struct pollfd readable {kFolderFd, POLLIN, 0};
  while (::ppoll(&readable, 1, nullptr, &none) < 0 && errno == EINTR) {
  }
  std::string line;
  char buffer[512];
  while (line.find('\n') == std::string::npos && line.size() <= kMaxLine) {
    const ssize_t n = ::read(kFolderFd, buffer, sizeof buffer);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    line.append(buffer, static_cast<std::size_t>(n));
  }
  const auto end = line.find('\n');
  line.resize(end == std::string::npos ? 0 : end);
  sigset_t pending;
  sigemptyset(&pending);
  ::sigpending(&pending);
  if (sigismember(&pending, SIGTERM) || sigismember(&pending, SIGINT)) line.clear();
  if (!line.empty() && ::write(kFolderFd, &kSpareTaken, 1) != 1) line.clear();  // the agent is gone
  return line;
}

}  // namespace

int run(const fs::path& run_dir) {
  prepare_process();
  Monitor m;
  return run_folder(m, run_dir);
}

int run_spare() {
  prepare_process();
  Monitor m;  // its loop, pool and runner made while it waits
  const std::string folder = wait_for_folder();
  Fd channel(kFolderFd);  // kept (never inherited by the workload) until the workload is spawned
  if (folder.empty()) return 0;  // the agent has no use for it, or a signal meant for it came
  ::fcntl(channel.get(), F_SETFD, FD_CLOEXEC);
  m.tell_when_spawned(std::move(channel));
  if (folder.front() != '/') {
    std::fprintf(stderr, "instanced-run: handed a run folder that is not an absolute path\n");
    return 2;
  }
  return run_folder(m, folder);
}

}  // namespace instanced::monitor
