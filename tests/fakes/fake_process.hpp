// An in-process ProcessRunner: nothing is started. Each spawn is recorded with its spec and
// gives a FakeProcess whose output and end the test (or an on_spawn script) decides.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/this_coro.hpp>
#include <csignal>
#include <cstring>
#include <functional>
#include <memory>

#include "common/process.hpp"
#include "common/wake.hpp"

namespace instanced::testing {

// What the test holds of a fake child: it writes output, ends it, sees the signals sent.
struct FakeChild {
  explicit FakeChild(boost::asio::any_io_executor ex, pid_t p, SpawnSpec s) : pid(p), spec(std::move(s)), changed(ex) {}
  void write(std::string_view text) {
    output += text;
    changed.pulse();
  }
  // Exits with `code` (or, with `signal`, as killed by it); the output ends too.
  void exit(int code, int signal = 0) {
    status = ExitStatus{signal ? -1 : code, signal};
    closed = true;
    changed.pulse();
  }

  pid_t pid;
  SpawnSpec spec;
  std::string output;
  bool closed = false;
  std::optional<ExitStatus> status;
  std::vector<int> signals;         // sent with signal_group, in order
  bool ignores_term = false;        // SIGTERM is recorded but does not end it
  Wake changed;
};

class FakeProcess final : public Process {
 public:
  explicit FakeProcess(std::shared_ptr<FakeChild> c) : c_(std::move(c)) {}
  pid_t pid() const override { return c_->pid; }
  boost::asio::awaitable<std::size_t> read_output(std::span<char> buffer) override {
    auto c = c_;
    while (c->output.empty() && !c->closed) co_await c->changed.wait();
    const std::size_t n = std::min(buffer.size(), c->output.size());
    std::memcpy(buffer.data(), c->output.data(), n);
    c->output.erase(0, n);
    co_return n;
  }
  void close_output() override { c_->closed = true; }
  boost::asio::awaitable<ExitStatus> wait() override {
    auto c = c_;
    while (!c->status) co_await c->changed.wait();
    co_return *c->status;
  }
  std::optional<ExitStatus> exit_status() const override { return c_->status; }
  void signal_group(int sig) override {
    c_->signals.push_back(sig);
    if (c_->status || (sig == SIGTERM && c_->ignores_term)) return;
    if (sig == SIGTERM || sig == SIGKILL || sig == SIGINT) c_->exit(-1, sig);
  }

 private:
  std::shared_ptr<FakeChild> c_;
};

class FakeProcessRunner final : public ProcessRunner {
 public:
  explicit FakeProcessRunner(boost::asio::any_io_executor ex) : ex_(ex) {}

  Result<std::unique_ptr<Process>> spawn(const SpawnSpec& spec) override {
    if (spawn_error) return Error{*spawn_error};
    auto c = std::make_shared<FakeChild>(ex_, next_pid_++, spec);
    children.push_back(c);
    if (on_spawn) on_spawn(*c);
    return std::unique_ptr<Process>(std::make_unique<FakeProcess>(c));
  }
  std::vector<pid_t> find_marked(const std::string&) override { return {}; }
  void signal(pid_t pid, int sig) override { signalled.emplace_back(pid, sig); }

  std::vector<std::shared_ptr<FakeChild>> children;  // every spawn, in order
  std::function<void(FakeChild&)> on_spawn;           // scripts each new child
  std::optional<std::string> spawn_error;             // the next spawns fail with it
  std::vector<std::pair<pid_t, int>> signalled;

 private:
  boost::asio::any_io_executor ex_;
  pid_t next_pid_ = 40000;
};

}  // namespace instanced::testing
