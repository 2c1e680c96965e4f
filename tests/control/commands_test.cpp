#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>

#include "agent/control/commands.hpp"
#include "tests/fakes/fake_clock.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::control;
namespace asio = boost::asio;

namespace {
CommandResult run(asio::io_context& ioc, CommandRegistry& reg, Command c) {
  CommandResult out;
  auto task = [&]() -> asio::awaitable<void> { out = co_await reg.execute(c); };
  asio::co_spawn(ioc, task(), asio::detached);
  ioc.run();
  ioc.restart();
  return out;
}
}  // namespace

TEST_CASE("a command id runs at most once, also across a restart", "[control][commands]") {
  asio::io_context ioc;
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::TempDir dir;
  int runs = 0;
  auto make = [&](CommandRegistry& reg) {
    reg.add("count", [&runs](const boost::json::object&) -> asio::awaitable<CommandResult> {
      ++runs;
      co_return CommandResult{Status::ok, {{"runs", runs}}, {}};
    });
  };
  {
    CommandRegistry reg(clock, fs, dir / "commands.json");
    make(reg);
    REQUIRE(reg.load().ok());
    CHECK(run(ioc, reg, {"id-1", "count", {}, {}}).result.at("runs") == 1);
    CHECK(run(ioc, reg, {"id-1", "count", {}, {}}).result.at("runs") == 1);  // the stored result
    CHECK(runs == 1);
  }
  CommandRegistry reg(clock, fs, dir / "commands.json");
  make(reg);
  REQUIRE(reg.load().ok());
  CHECK(run(ioc, reg, {"id-1", "count", {}, {}}).result.at("runs") == 1);
  CHECK(runs == 1);
  CHECK(run(ioc, reg, {"id-2", "count", {}, {}}).result.at("runs") == 2);

  SECTION("after 24 hours an id is forgotten") {
    clock.advance(std::chrono::hours(25));
    CommandRegistry later(clock, fs, dir / "commands.json");
    make(later);
    REQUIRE(later.load().ok());
    CHECK(later.remembered() == 0);
  }
}

TEST_CASE("a duplicate sent while the command runs waits for its result, and it does not run again",
          "[control][commands]") {
  asio::io_context ioc;
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::TempDir dir;
  int runs = 0;
  asio::steady_timer release(ioc, asio::steady_timer::time_point::max());
  CommandRegistry reg(clock, fs, dir / "commands.json");
  reg.add("slow", [&](const boost::json::object&) -> asio::awaitable<CommandResult> {
    int mine = ++runs;
    boost::system::error_code ec;
    co_await release.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    co_return CommandResult{Status::ok, {{"run", mine}}, {}};
  });
  REQUIRE(reg.load().ok());
  std::vector<CommandResult> got;
  // Named, not a temporary inside co_await (docs/architecture.md: GCC 12).
  const Command dup{"dup", "slow", {}, {}};
  auto send = [&]() -> asio::awaitable<void> { got.push_back(co_await reg.execute(dup)); };
  asio::co_spawn(ioc, send(), asio::detached);
  asio::co_spawn(ioc, send(), asio::detached);
  ioc.run_for(std::chrono::milliseconds(50));
  CHECK(runs == 1);
  CHECK(got.empty());
  // Recorded as started before the handler ran.
  CHECK_THAT(testing::slurp(dir / "commands.json"), Catch::Contains(R"("dup":{)") && Catch::Contains(R"("status":"started")"));
  release.cancel();
  ioc.run();
  REQUIRE(got.size() == 2);
  CHECK(got[0].result == got[1].result);
  CHECK(runs == 1);
}

TEST_CASE("a command that had started when the agent stopped is answered interrupted, not run again",
          "[control][commands]") {
  asio::io_context ioc;
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::TempDir dir;
  int runs = 0;
  auto make = [&](CommandRegistry& reg) {
    reg.add("forever", [&](const boost::json::object&) -> asio::awaitable<CommandResult> {
      ++runs;
      asio::steady_timer never(co_await asio::this_coro::executor, asio::steady_timer::time_point::max());
      co_await never.async_wait(asio::use_awaitable);  // throws when cancelled
      co_return CommandResult{};
    });
  };
  {
    CommandRegistry reg(clock, fs, dir / "commands.json");
    make(reg);
    REQUIRE(reg.load().ok());
    asio::cancellation_signal stop;
    bool aborted = false;
    const Command long_one{"long-1", "forever", {}, {}};
    auto task = [&]() -> asio::awaitable<void> { (void)co_await reg.execute(long_one); };
    asio::co_spawn(ioc, task(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) { aborted = e != nullptr; }));
    ioc.run_for(std::chrono::milliseconds(20));
    stop.emit(asio::cancellation_type::terminal);  // the agent stops (a crash leaves the same file)
    ioc.run();
    ioc.restart();
    CHECK(aborted);
  }
  CommandRegistry again(clock, fs, dir / "commands.json");
  make(again);
  auto interrupted = again.load();
  REQUIRE(interrupted.ok());
  CHECK(*interrupted == std::vector<std::string>{"long-1"});
  auto r = run(ioc, again, {"long-1", "forever", {}, {}});
  CHECK(r.status == Status::interrupted);
  CHECK_THAT(r.error, Catch::Contains("it was not run again"));
  CHECK(runs == 1);
  // Reported once: the next start has nothing new to report.
  CommandRegistry third(clock, fs, dir / "commands.json");
  make(third);
  CHECK(third.load()->empty());
}

TEST_CASE("unknown, late and malformed commands get their status", "[control][commands]") {
  asio::io_context ioc;
  testing::FakeClock clock;  // 2027-01-15
  RealFilesystem fs;
  testing::TempDir dir;
  CommandRegistry reg(clock, fs, dir / "commands.json");
  bool ran = false;
  reg.add("ping", [&](const boost::json::object&) -> asio::awaitable<CommandResult> {
    ran = true;
    co_return CommandResult{};
  });
  auto unknown = run(ioc, reg, {"a", "frobnicate", {}, {}});
  CHECK(unknown.status == Status::unsupported);
  CHECK(unknown.error == "unknown command 'frobnicate'");
  auto late = run(ioc, reg, {"b", "ping", {}, std::string("2026-01-01T00:00:00Z")});
  CHECK(late.status == Status::expired);
  auto garbled = run(ioc, reg, {"c", "ping", {}, std::string("tomorrow")});
  CHECK(garbled.status == Status::invalid);
  CHECK_THAT(garbled.error, Catch::StartsWith("deadline:"));
  CHECK_FALSE(ran);
  auto in_time = run(ioc, reg, {"d", "ping", {}, std::string("2099-01-01T00:00:00.5Z")});
  CHECK(in_time.status == Status::ok);
  CHECK(ran);
}

TEST_CASE("prepare_stop asks every veto, and the first reason refuses, then runs every drain", "[control][commands]") {
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::TempDir dir;
  CommandRegistry reg(clock, fs, dir / "commands.json");
  asio::io_context ioc;
  auto prepare = [&](std::string action) {
    std::optional<CommandResult> out;
    auto task = [&]() -> asio::awaitable<void> { out = co_await reg.prepare(action); };
    asio::co_spawn(ioc, task(), asio::detached);
    ioc.restart();
    ioc.run();
    REQUIRE(out);
    return *out;
  };
  CHECK(prepare("prepare_stop").status == Status::ok);
  std::vector<std::string> drained;
  reg.add_drain("jobs", [&](std::string action) -> asio::awaitable<Result<std::string>> {
    drained.push_back("jobs " + action);
    co_return std::string("2 jobs finished");
  });
  reg.add_drain("mounts", [&](std::string action) -> asio::awaitable<Result<std::string>> {
    drained.push_back("mounts " + action);
    co_return std::string("synced and unmounted");
  });
  auto ok = prepare("prepare_restart");
  CHECK(ok.status == Status::ok);
  CHECK(drained == std::vector<std::string>{"jobs prepare_restart", "mounts prepare_restart"});
  CHECK(ok.result.at("drained").at("mounts") == "synced and unmounted");

  reg.add_veto("jobs", [](std::string_view) -> std::optional<std::string> { return std::nullopt; });
  reg.add_veto("disk", [](std::string_view action) -> std::optional<std::string> {
    return std::string(action) + " refused: free 1.2 GiB more on /";
  });
  drained.clear();
  auto r = prepare("prepare_stop");
  CHECK(r.status == Status::refused);
  CHECK(r.error == "disk: prepare_stop refused: free 1.2 GiB more on /");
  CHECK(r.result.at("subsystem") == "disk");
  CHECK(drained.empty());  // a veto refuses before anything is drained
}

TEST_CASE("a drain that cannot finish refuses the stop, after the drains before it", "[control][commands]") {
  testing::FakeClock clock;
  RealFilesystem fs;
  testing::TempDir dir;
  CommandRegistry reg(clock, fs, dir / "commands.json");
  reg.add_drain("jobs", [](std::string) -> asio::awaitable<Result<std::string>> { co_return std::string("none running"); });
  reg.add_drain("setup", [](std::string action) -> asio::awaitable<Result<std::string>> {
    co_return Error{action + " refused: setup script conda is still running"};
  });
  asio::io_context ioc;
  std::optional<CommandResult> out;
  auto task = [&]() -> asio::awaitable<void> { out = co_await reg.prepare("prepare_stop"); };
  asio::co_spawn(ioc, task(), asio::detached);
  ioc.run();
  REQUIRE(out);
  CHECK(out->status == Status::refused);
  CHECK(out->error == "setup: prepare_stop refused: setup script conda is still running");
  CHECK(out->result.at("drained").at("jobs") == "none running");
}
