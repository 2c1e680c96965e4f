#include "common/services.hpp"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace instanced {
namespace asio = boost::asio;

Systemctl::Systemctl(ProcessRunner& runner, Clock& clock, std::string program, Duration timeout)
    : runner_(runner), clock_(clock), program_(std::move(program)), timeout_(timeout) {}

asio::awaitable<Result<CommandOutput>> Systemctl::call(std::vector<std::string> args) {
  std::string path = program_.find('/') == std::string::npos ? find_program(program_) : program_;
  if (path.empty()) co_return Error{fmt::format("{}: not found on PATH", program_)};
  SpawnSpec spec;
  spec.argv.push_back(path);
  spec.argv.insert(spec.argv.end(), args.begin(), args.end());
  // No pager, no colours, no questions: systemctl's own switches for scripts.
  spec.env = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0", "LC_ALL=C"};
  co_return co_await run_command(runner_, clock_, std::move(spec), timeout_, 16 << 10);
}

// The queries print one word and say it with their exit status too (non-zero for
// "disabled", "inactive"): the word is the answer.
asio::awaitable<Result<std::string>> Systemctl::word(std::vector<std::string> args) {
  auto what = fmt::format("systemctl {}", fmt::join(args, " "));
  auto r = co_await call(std::move(args));
  if (!r) co_return r.error();
  std::string w = r->last_line();
  if (w.empty() || w.find(' ') != std::string::npos)
    co_return Error{fmt::format("{}: {}{}", what, r->status.describe(), w.empty() ? " and no answer" : ": " + w)};
  co_return w;
}

asio::awaitable<Result<void>> Systemctl::act(std::vector<std::string> args) {
  auto what = fmt::format("systemctl {}", fmt::join(args, " "));
  auto r = co_await call(std::move(args));
  if (!r) co_return r.error();
  if (!r->status.success()) {
    std::string last = r->last_line();
    co_return Error{fmt::format("{}: {}{}", what, r->status.describe(), last.empty() ? "" : ": " + last)};
  }
  co_return Result<void>{};
}

asio::awaitable<Result<std::string>> Systemctl::unit_file_state(std::string unit) {
  std::vector<std::string> args{"is-enabled", "--", unit};
  co_return co_await word(std::move(args));
}
asio::awaitable<Result<std::string>> Systemctl::active_state(std::string unit) {
  std::vector<std::string> args{"is-active", "--", unit};
  co_return co_await word(std::move(args));
}
asio::awaitable<Result<void>> Systemctl::enable_now(std::string unit) {
  std::vector<std::string> args{"enable", "--now", "--", unit};
  co_return co_await act(std::move(args));
}
asio::awaitable<Result<void>> Systemctl::disable_now(std::string unit) {
  std::vector<std::string> args{"disable", "--now", "--", unit};
  co_return co_await act(std::move(args));
}
asio::awaitable<Result<void>> Systemctl::restart(std::string unit) {
  std::vector<std::string> args{"restart", "--", unit};
  co_return co_await act(std::move(args));
}
asio::awaitable<Result<std::string>> Systemctl::system_state() {
  std::vector<std::string> args{"is-system-running"};
  co_return co_await word(std::move(args));
}

}  // namespace instanced
