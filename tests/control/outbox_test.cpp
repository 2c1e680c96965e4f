#include <catch2/catch.hpp>
#include <fstream>
#include <algorithm>
#include <sys/stat.h>

#include "agent/control/outbox.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/tmpfs.hpp"

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

TEST_CASE("a full state folder: messages are held in memory, in order, and written when space returns",
          "[control][outbox][enospc]") {
  TempDir dir;
  instanced::testing::Tmpfs small(dir, "small", "size=256k");
  const auto& fs_dir = small.path();
  Outbox o(fs_dir / "outbox", 1 << 20, 4000);
  REQUIRE(o.open().ok());
  // Fill the file system (the log is empty: its first record needs a page of its own).
  {
    std::ofstream fill(fs_dir / "fill", std::ios::binary);
    std::string block(4096, 'x');
    while (fill.write(block.data(), block.size())) {
    }
  }
  auto failed = o.append(Outbox::Kind::event, msg(o.next_seq()));
  REQUIRE_FALSE(failed.ok());
  CHECK_THAT(failed.error().message, Catch::Contains("No space left on device") && Catch::Contains("outbox.log"));
  REQUIRE_FALSE(o.append(Outbox::Kind::result, msg(o.next_seq(), 300)).ok());
  CHECK(o.held() == 2);
  CHECK(o.pending().size() == 2);  // held messages are pending like the others: they are sent
  // Over the memory bound the oldest held events go, never a result.
  for (int i = 0; i < 20; ++i) (void)o.append(Outbox::Kind::event, msg(o.next_seq(), 300));
  CHECK(o.held_bytes() <= 4000);
  CHECK(o.held_dropped() > 0);
  std::size_t results = 0;
  for (const auto& e : o.pending()) results += e.kind == Outbox::Kind::result;
  CHECK(results == 1);
  CHECK_FALSE(o.retry().ok());
  // An acknowledgement that cannot be recorded is kept in memory (and the message it
  // covers needs no writing any more).
  CHECK_FALSE(o.ack(1).ok());
  CHECK(o.acked() == 1);
  CHECK(o.pending().front().seq == 2);

  std::filesystem::remove(fs_dir / "fill");
  REQUIRE(o.retry().ok());
  CHECK(o.held() == 0);
  std::vector<std::uint64_t> seqs;
  for (const auto& e : o.pending()) seqs.push_back(e.seq);
  REQUIRE(std::is_sorted(seqs.begin(), seqs.end()));
  // On disk, in order, with the acknowledgement: a restart sends the same messages.
  Outbox again(fs_dir / "outbox", 1 << 20);
  REQUIRE(again.open().ok());
  CHECK(again.acked() == 1);
  std::vector<std::uint64_t> reread;
  for (const auto& e : again.pending()) reread.push_back(e.seq);
  CHECK(reread == seqs);
  CHECK(again.next_seq() == o.next_seq());
}
