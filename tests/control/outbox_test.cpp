#include <catch2/catch.hpp>
#include <fstream>
#include <sys/stat.h>

#include "agent/control/outbox.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced::control;
using instanced::testing::TempDir;

namespace {
std::string msg(std::uint64_t seq, std::size_t pad = 10) {
  return R"({"v":1,"type":"event","id":"x","seq":)" + std::to_string(seq) + R"(,"body":{"p":")" + std::string(pad, 'a') + "\"}}";
}
}  // namespace

TEST_CASE("the outbox keeps what was appended until it is acknowledged, across restarts", "[control][outbox]") {
  TempDir dir;
  {
    Outbox o(dir / "outbox", 1 << 20);
    REQUIRE(o.open().ok());
    for (int i = 0; i < 5; ++i) REQUIRE(o.append(Outbox::Kind::event, msg(o.next_seq())).ok());
    REQUIRE(o.append(Outbox::Kind::result, msg(o.next_seq())).ok());
    REQUIRE(o.ack(3).ok());
    CHECK(o.pending().size() == 3);
    CHECK(o.pending().front().seq == 4);
  }
  struct stat st{};
  REQUIRE(::stat((dir / "outbox/outbox.log").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  Outbox again(dir / "outbox", 1 << 20);
  REQUIRE(again.open().ok());
  REQUIRE(again.pending().size() == 3);
  CHECK(again.pending()[0].seq == 4);
  CHECK(again.pending()[2].kind == Outbox::Kind::result);
  CHECK(again.pending()[2].payload == msg(6));
  CHECK(again.next_seq() == 7);
  CHECK(again.acked() == 3);
}

TEST_CASE("a torn record at the end (kill -9 mid-append) is cut, nothing before it is lost", "[control][outbox]") {
  TempDir dir;
  {
    Outbox o(dir / "outbox", 1 << 20);
    REQUIRE(o.open().ok());
    for (int i = 0; i < 3; ++i) REQUIRE(o.append(Outbox::Kind::result, msg(o.next_seq())).ok());
  }
  auto log = dir / "outbox/outbox.log";
  auto size = std::filesystem::file_size(log);
  std::filesystem::resize_file(log, size - 7);  // the third record loses its tail
  {
    Outbox o(dir / "outbox", 1 << 20);
    REQUIRE(o.open().ok());
    CHECK(o.pending().size() == 2);
    CHECK(o.torn_records_dropped() == 1);
    CHECK(o.next_seq() == 3);
    REQUIRE(o.append(Outbox::Kind::result, msg(3)).ok());  // appends on a clean boundary
  }
  SECTION("and garbage in the middle stops the read at the last good record") {
    std::fstream f(log, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(20);
    f.put('\x7f');
    f.close();
    Outbox o(dir / "outbox", 1 << 20);
    REQUIRE(o.open().ok());
    CHECK(o.pending().empty());
  }
  SECTION("otherwise all three are there") {
    Outbox o(dir / "outbox", 1 << 20);
    REQUIRE(o.open().ok());
    CHECK(o.pending().size() == 3);
  }
}

TEST_CASE("over its bound the outbox drops the oldest events, never results", "[control][outbox]") {
  TempDir dir;
  Outbox o(dir / "outbox", 1000);
  REQUIRE(o.open().ok());
  REQUIRE(o.append(Outbox::Kind::result, msg(o.next_seq(), 300)).ok());
  for (int i = 0; i < 6; ++i) REQUIRE(o.append(Outbox::Kind::event, msg(o.next_seq(), 300)).ok());
  CHECK(o.pending_bytes() <= 1000);
  CHECK(o.dropped() > 0);
  CHECK(o.pending().front().kind == Outbox::Kind::result);
  CHECK(o.pending().back().seq == 7);  // the newest event is kept
  for (int i = 0; i < 5; ++i) REQUIRE(o.append(Outbox::Kind::result, msg(o.next_seq(), 300)).ok());
  std::size_t results = 0;
  for (const auto& e : o.pending()) results += e.kind == Outbox::Kind::result;
  CHECK(results == 6);  // over the bound, but no result dropped
  // A restart does not bring dropped events back.
  auto pending = o.pending().size();
  Outbox again(dir / "outbox", 1000);
  REQUIRE(again.open().ok());
  CHECK(again.pending().size() == pending);
}
