// The capped per-run log: head and tail kept, the cut marked, readers mapped onto it.
#include <catch2/catch.hpp>
#include <fstream>
#include <sstream>

#include "agent/setup/records.hpp"
#include "common/run_log.hpp"
#include "common/text.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::setup;
using instanced::testing::slurp;
using instanced::testing::TempDir;

namespace {

// Reads everything a follower would, from offset 0, in chunks of `chunk`.
std::string follow(const RunLog& log, std::size_t chunk, std::uint64_t* skipped) {
  std::string out;
  std::uint64_t at = 0;
  *skipped = 0;
  for (;;) {
    auto c = log.read(at, chunk);
    *skipped += c.skipped;
    out += c.data;
    if (c.next == at) return out;
    at = c.next;
  }
}
}  // namespace

TEST_CASE("output under the cap is kept whole, lines go to the journal and the tail", "[setup][log]") {
  TempDir dir;
  std::vector<std::string> journal;
  RunLog log(dir / "run.log", 1000, 3, [&](std::string_view l) { journal.emplace_back(l); });
  log.feed("one\ntwo\nthr");
  log.feed("ee\nfour\nfive");
  CHECK(log.last_lines() == std::vector<std::string>{"three", "four", "five"});
  auto layout = log.finish();
  CHECK(slurp(dir / "run.log") == "one\ntwo\nthree\nfour\nfive");
  CHECK(layout.produced == 23);
  CHECK(layout.head == 23);
  CHECK(layout.marker == 0);
  CHECK(layout.tail == 0);
  CHECK(journal == std::vector<std::string>{"one", "two", "three", "four", "five"});
  CHECK(log.last_lines() == std::vector<std::string>{"three", "four", "five"});
  std::uint64_t skipped = 0;
  CHECK(follow(log, 4, &skipped) == "one\ntwo\nthree\nfour\nfive");
  CHECK(skipped == 0);
}

TEST_CASE("output over the cap keeps the head and the tail with a marker, in bounded memory", "[setup][log]") {
  TempDir dir;
  std::size_t journal_bytes = 0;
  std::vector<std::string> journal;
  RunLog log(dir / "run.log", 4096, 2, [&](std::string_view l) {
    journal_bytes += l.size() + 1;
    journal.emplace_back(l);
  });
  std::string all;
  for (int i = 0; i < 20000; ++i) {
    std::string line = "line " + std::to_string(i) + "\n";
    all += line;
    log.feed(line);
  }
  // While it runs: the head from the file, then a skip to the kept tail.
  std::uint64_t skipped = 0;
  std::string live = follow(log, 1000, &skipped);
  CHECK(live == all.substr(0, 2048) + all.substr(all.size() - 2048));
  CHECK(skipped == all.size() - 4096);
  CHECK(log.last_lines() == std::vector<std::string>{"line 19998", "line 19999"});

  auto layout = log.finish();
  std::string file = slurp(dir / "run.log");
  CHECK(layout.head == 2048);
  CHECK(layout.tail == 2048);
  CHECK(file.substr(0, 2048) == all.substr(0, 2048));
  CHECK(file.substr(file.size() - 2048) == all.substr(all.size() - 2048));
  CHECK(file.find(fmt::format("[instanced: {} bytes of output cut here", all.size() - 4096)) != std::string::npos);
  CHECK(file.size() == 4096 + layout.marker);
  // After it ended: the same stream, now from the file.
  CHECK(follow(log, 777, &skipped) == live);
  CHECK(skipped == all.size() - 4096);
  CHECK(read_finished_log(dir / "run.log", layout, 5000, 100).skipped == all.size() - 2048 - 5000);
  // The journal got lines up to its budget (the cap), then one line saying where the rest is.
  CHECK(journal_bytes <= 4096 + 200);
  CHECK_THAT(journal.back(), Catch::Contains("further output is not sent to the journal"));
  CHECK(log.last_lines() == std::vector<std::string>{"line 19998", "line 19999"});
}

TEST_CASE("invalid UTF-8 and control bytes are escaped for the journal and the tail, kept raw in the file",
          "[setup][log]") {
  TempDir dir;
  std::vector<std::string> journal;
  RunLog log(dir / "run.log", 1 << 20, 10, [&](std::string_view l) { journal.emplace_back(l); });
  std::string raw = "ok é \xff\xfe \x1b[31mred\x1b[0m\tTab \xc3\n";
  log.feed(raw);
  log.finish();
  CHECK(slurp(dir / "run.log") == raw);
  REQUIRE(journal.size() == 1);
  CHECK(journal[0] == "ok é \\xff\\xfe \\x1b[31mred\\x1b[0m\tTab \\xc3");
  CHECK(log.last_lines() == journal);
  CHECK(escape_for_log("\xed\xa0\x80") == "\\xed\\xa0\\x80");   // a UTF-16 surrogate
  CHECK(escape_for_log("\xc0\xaf") == "\\xc0\\xaf");             // overlong '/'
  CHECK(escape_for_log("\xf0\x9f\x98\x80") == "\xf0\x9f\x98\x80");  // an emoji is fine
}

TEST_CASE("very long lines are split for the journal and cut in the tail", "[setup][log]") {
  TempDir dir;
  std::vector<std::string> journal;
  RunLog log(dir / "run.log", 1 << 20, 10, [&](std::string_view l) { journal.emplace_back(l); });
  log.feed(std::string(10000, 'x') + "\nend\n");
  log.finish();
  REQUIRE(journal.size() == 4);
  CHECK(journal[0].size() == RunLog::kMaxLine);
  CHECK(journal[2].size() == 10000 - 2 * RunLog::kMaxLine);
  auto tail = log.last_lines();
  CHECK(tail.back() == "end");
  CHECK(tail.front() == std::string(RunLog::kMaxTailLine, 'x') + "…");
}

TEST_CASE("a log file that cannot be created is reported and the run goes on", "[setup][log]") {
  std::vector<std::string> journal;
  RunLog log("/nonexistent/dir/run.log", 4096, 5, [&](std::string_view l) { journal.emplace_back(l); });
  REQUIRE(log.error());
  CHECK_THAT(*log.error(), Catch::Contains("cannot create /nonexistent/dir/run.log"));
  log.feed("still\n");
  log.finish();
  CHECK(journal == std::vector<std::string>{"still"});
  CHECK(log.last_lines() == std::vector<std::string>{"still"});
}

TEST_CASE("the setup records file: round trip, and a damaged file is named precisely", "[setup][records]") {
  Records r;
  auto& s = r.scripts["conda"];
  s.state = ScriptState::timed_out;
  s.runs = 3;
  s.last.run_id = "abc";
  s.last.exit_code = 2;
  s.last.leftovers = {12, 13};
  s.last.layout = LogLayout{10, 4, 2, 3};
  auto back = Records::parse(r.to_json());
  REQUIRE(back.ok());
  const auto& b = back->scripts.at("conda");
  CHECK(b.state == ScriptState::timed_out);
  CHECK(b.runs == 3);
  CHECK(b.last.run_id == "abc");
  CHECK(b.last.exit_code == 2);
  CHECK(b.last.leftovers == std::vector<int>{12, 13});
  CHECK(b.last.layout.tail == 3);
  CHECK(Records::parse("{").error().message.starts_with("not valid JSON"));
  CHECK(Records::parse(R"({"version":2,"scripts":{}})").error().message == "version: expected 1");
  CHECK(Records::parse(R"({"version":1,"scripts":{"x":{"state":"bogus"}}})").error().message ==
        "scripts.x.state: 'bogus' is not a state");
}
