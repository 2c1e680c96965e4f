#include <catch2/catch.hpp>

#include "common/log.hpp"
#include "common/secret.hpp"
#include "common/systemd.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::testing;

TEST_CASE("journald entries carry the identifier, priority and subsystem", "[log]") {
  TempDir dir;
  // A datagram socket standing in for /run/systemd/journal/socket.
  NotifySocket journal(dir / "journal.sock");
  Logging logging(LogTarget::journald, LogLevel::info, (dir / "journal.sock").string());
  REQUIRE(logging.journald());
  auto log = logging.get("status");

  log->warn("socket {} refused uid {}", "/run/instanced/status.sock", 1000);
  auto entry = journal.receive(std::chrono::seconds(2));
  REQUIRE(entry);
  CHECK(*entry ==
        "MESSAGE=socket /run/instanced/status.sock refused uid 1000\nPRIORITY=4\nSYSLOG_IDENTIFIER=instanced\n"
        "INSTANCED_SUBSYSTEM=status\n");

  SECTION("a message with newlines uses the length-prefixed form") {
    log->error("line one\nline two");
    auto e = journal.receive(std::chrono::seconds(2));
    REQUIRE(e);
    std::string expected = std::string("MESSAGE\n") + std::string("\x11\0\0\0\0\0\0\0", 8) + "line one\nline two\n";
    CHECK(e->starts_with(expected));
    CHECK_THAT(*e, Catch::Contains("PRIORITY=3\n"));
  }
  SECTION("a secret is logged as ***") {
    log->info("token {}", Secret("s3cr3t-token"));
    auto e = journal.receive(std::chrono::seconds(2));
    REQUIRE(e);
    CHECK_THAT(*e, Catch::StartsWith("MESSAGE=token ***\n"));
    CHECK(e->find("s3cr3t") == std::string::npos);
  }
  SECTION("levels below the configured one are dropped, and a reload can lower it") {
    log->debug("hidden");
    CHECK_FALSE(journal.receive(std::chrono::milliseconds(100)));
    logging.set_level(LogLevel::debug);
    log->debug("shown");
    auto e = journal.receive(std::chrono::seconds(2));
    REQUIRE(e);
    CHECK_THAT(*e, Catch::StartsWith("MESSAGE=shown\nPRIORITY=7\n"));
  }
}

TEST_CASE("socket activation and watchdog variables are read as systemd sets them", "[log][systemd]") {
  ::setenv("WATCHDOG_USEC", "30000000", 1);
  ::setenv("WATCHDOG_PID", std::to_string(::getpid()).c_str(), 1);
  CHECK(systemd::watchdog_timeout() == std::chrono::seconds(30));
  ::setenv("WATCHDOG_PID", "1", 1);  // meant for another process
  CHECK_FALSE(systemd::watchdog_timeout());
  ::unsetenv("WATCHDOG_USEC");
  ::unsetenv("WATCHDOG_PID");
  CHECK_FALSE(systemd::watchdog_timeout());

  ::setenv("LISTEN_PID", "1", 1);  // not ours: ignored, and cleared
  ::setenv("LISTEN_FDS", "1", 1);
  CHECK(systemd::listen_fds().empty());
  CHECK(std::getenv("LISTEN_FDS") == nullptr);
}
