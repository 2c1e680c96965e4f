#include <catch2/catch.hpp>

#include <fstream>
#include <set>
#include <thread>
#include <vector>
#include <sstream>

#include "common/log.hpp"
#include "common/message_ids.hpp"
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

TEST_CASE("journal records carry the event's MESSAGE_ID and the entity's fields while a LogFields lives", "[log]") {
  TempDir dir;
  NotifySocket journal(dir / "journal.sock");
  Logging logging(LogTarget::journald, LogLevel::info, (dir / "journal.sock").string());
  auto log = logging.get("jobs");
  const std::string id = "train-7";
  {
    LogFields outer{{"INSTANCED_JOB", id}};
    {
      LogFields inner{{"MESSAGE_ID", msgid::kJobFinished}};
      log->info("job {} succeeded", id);
    }
    log->info("after the inner scope");
  }
  log->info("after both");
  auto first = journal.receive(std::chrono::seconds(2));
  REQUIRE(first);
  CHECK(*first == "MESSAGE=job train-7 succeeded\nPRIORITY=6\nINSTANCED_JOB=train-7\nMESSAGE_ID=" +
                      std::string(msgid::kJobFinished) + "\nSYSLOG_IDENTIFIER=instanced\nINSTANCED_SUBSYSTEM=jobs\n");
  auto second = journal.receive(std::chrono::seconds(2));
  REQUIRE(second);
  CHECK_THAT(*second, Catch::Contains("INSTANCED_JOB=train-7\n"));
  CHECK(second->find("MESSAGE_ID=") == std::string::npos);
  auto third = journal.receive(std::chrono::seconds(2));
  REQUIRE(third);
  CHECK(*third == "MESSAGE=after both\nPRIORITY=6\nSYSLOG_IDENTIFIER=instanced\nINSTANCED_SUBSYSTEM=jobs\n");
}

TEST_CASE("workload output goes to the journal under its own identifier, rate-limited apart from the agent's records",
          "[log]") {
  TempDir dir;
  NotifySocket journal(dir / "journal.sock");
  Logging logging(LogTarget::journald, LogLevel::info, (dir / "journal.sock").string());
  auto log = logging.get("setup");
  const std::string script = "noisy";
  // Read as journald does, beside the writer: a journal socket's queue is short and a send
  // waits for room. Datagrams arrive in order: the agent's record, written last, ends it.
  std::vector<std::string> received;
  std::thread reader([&] {
    while (auto e = journal.receive(std::chrono::seconds(10))) {
      received.push_back(*e);
      if (e->find("MESSAGE=the agent's own record\n") != std::string::npos) return;
    }
  });
  const auto start = std::chrono::steady_clock::now();
  const int sent = 3000;
  for (int i = 0; i < sent; ++i)
    logging.workload_line(log, spdlog::level::info, "instanced-setup", {"INSTANCED_SCRIPT", script},
                          "line " + std::to_string(i));
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  log->warn("the agent's own record");
  reader.join();
  int workload = 0;
  bool own = false;
  for (const auto* e = received.data(); e != received.data() + received.size(); ++e) {
    if (e->find("SYSLOG_IDENTIFIER=instanced-setup\n") != std::string::npos) {
      CHECK_THAT(*e, Catch::Contains("INSTANCED_SCRIPT=noisy\n"));
      CHECK_THAT(*e, Catch::Contains("INSTANCED_SUBSYSTEM=setup\n"));
      ++workload;
    } else if (e->find("MESSAGE=the agent's own record\n") != std::string::npos) {
      CHECK_THAT(*e, Catch::Contains("SYSLOG_IDENTIFIER=instanced\n"));
      own = true;
    }
  }
  CHECK(own);
  // The burst, and what the rate refilled while the loop ran: never the whole flood.
  CHECK(workload >= static_cast<int>(Logging::kWorkloadLineBurst));
  CHECK(workload <= static_cast<int>(Logging::kWorkloadLineBurst + Logging::kWorkloadLinesPerSecond * elapsed) + 1);
  CHECK(workload < sent);
}

TEST_CASE("the rate limit is a token bucket: a burst, then the rate", "[log]") {
  RateLimit limit(10, 3);
  const auto t0 = std::chrono::steady_clock::time_point{} + std::chrono::hours(1);
  CHECK(limit.take(t0));
  CHECK(limit.take(t0));
  CHECK(limit.take(t0));
  CHECK_FALSE(limit.take(t0));
  CHECK_FALSE(limit.take(t0 + std::chrono::milliseconds(50)));  // half a token
  CHECK(limit.take(t0 + std::chrono::milliseconds(100)));
  CHECK_FALSE(limit.take(t0 + std::chrono::milliseconds(100)));
  CHECK(limit.take(t0 + std::chrono::hours(1)));  // refilled to the burst, not beyond
  CHECK(limit.take(t0 + std::chrono::hours(1)));
  CHECK(limit.take(t0 + std::chrono::hours(1)));
  CHECK_FALSE(limit.take(t0 + std::chrono::hours(1)));
}

TEST_CASE("every MESSAGE_ID is unique, 128 bits in hex, and listed in docs/logging.md", "[log]") {
  std::ifstream in(std::string(TEST_SOURCE_DIR) + "/../docs/logging.md");
  REQUIRE(in);
  std::stringstream doc;
  doc << in.rdbuf();
  std::set<std::string_view> ids;
  for (const auto& e : msgid::kAll) {
    INFO(e.name);
    CHECK(e.id.size() == 32);
    CHECK(e.id.find_first_not_of("0123456789abcdef") == std::string_view::npos);
    CHECK(ids.insert(e.id).second);
    CHECK_THAT(doc.str(), Catch::Contains("| `" + std::string(e.name) + "` | `" + std::string(e.id) + "` |"));
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
