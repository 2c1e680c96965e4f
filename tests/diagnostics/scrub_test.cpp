// The bundle's redaction and its bounded files, without the agent.
#include <catch2/catch.hpp>
#include <random>
#include <sys/stat.h>

#include "agent/diagnostics/files.hpp"
#include "agent/diagnostics/scrub.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced::diagnostics;
using instanced::testing::slurp;
using instanced::testing::TempDir;

namespace {

// The text fed in pieces of random sizes (1 to 40 bytes).
std::string scrub_in_pieces(const std::vector<std::string>& secrets, const std::string& text, unsigned seed,
                            std::uint64_t* replaced = nullptr) {
  Scrubber s(secrets);
  std::mt19937 rng(seed);
  std::string out;
  for (std::size_t at = 0; at < text.size();) {
    std::size_t n = std::min<std::size_t>(text.size() - at, rng() % 40 + 1);
    out += s.feed(std::string_view(text).substr(at, n));
    at += n;
  }
  out += s.finish();
  if (replaced) *replaced = s.replaced();
  return out;
}

}  // namespace

TEST_CASE("every secret is replaced wherever the pieces are cut", "[diagnostics][scrub]") {
  const std::vector<std::string> secrets{"hunter2-token", "token-abc", "ZZZZZZZZ"};
  const std::string text =
      "a hunter2-token here, token-abc there;hunter2-tokenhunter2-token\nZZZZZZZZZ and hunter2-toke (not whole) "
      "end:token-abc";
  const std::string expected =
      "a *** here, *** there;******\n*** and hunter2-toke (not whole) end:***";
  for (unsigned seed = 0; seed < 200; ++seed) {
    std::uint64_t replaced = 0;
    REQUIRE(scrub_in_pieces(secrets, text, seed, &replaced) == expected);
    REQUIRE(replaced == 6);
  }
}

TEST_CASE("a secret inside a longer one is replaced once, as part of the longer", "[diagnostics][scrub]") {
  Scrubber s({"secret-value", "secret-value-and-more"});
  std::string out = s.feed("x secret-value-and-more y secret-value z");
  out += s.finish();
  CHECK(out == "x *** y *** z");
  CHECK(s.replaced() == 2);
}

TEST_CASE("overlapping secrets are replaced together, leaving no part of either", "[diagnostics][scrub]") {
  const std::vector<std::string> secrets{"abcdefgh", "efghijkl", "klmnopqr"};
  for (unsigned seed = 0; seed < 200; ++seed) {
    std::uint64_t replaced = 0;
    REQUIRE(scrub_in_pieces(secrets, "1 abcdefghijklmnopqr 2 efghijkl 3", seed, &replaced) == "1 *** 2 *** 3");
    REQUIRE(replaced == 2);
  }
}

TEST_CASE("short values are not taken for secrets", "[diagnostics][scrub]") {
  Scrubber s({"abc", ""});
  std::string out = s.feed("abc abc");
  out += s.finish();
  CHECK(out == "abc abc");
  CHECK(secrets_in("abc\n").empty());
}

TEST_CASE("a secret file's values: its first line, a SAS's signature, each spelling", "[diagnostics][scrub]") {
  auto token = secrets_in("  tok/en+value==  \nsecond line is not read\n");
  CHECK(std::find(token.begin(), token.end(), "tok/en+value==") != token.end());
  CHECK(std::find(token.begin(), token.end(), "tok%2Fen%2Bvalue%3D%3D") != token.end());
  CHECK(std::find(token.begin(), token.end(), "second line is not read") == token.end());

  auto creds = secrets_in("proxy-user:pa ss/word\n");
  CHECK(std::find(creds.begin(), creds.end(), "pa ss/word") != creds.end());
  CHECK(std::find(creds.begin(), creds.end(), "pa%20ss%2Fword") != creds.end());

  auto sas = secrets_in("?sv=2017-07-29&sr=c&sp=rw&se=2099-01-01T00:00:00Z&sig=ab%2Bcd%2Fef%3D\n");
  CHECK(std::find(sas.begin(), sas.end(), "ab%2Bcd%2Fef%3D") != sas.end());  // as sent
  CHECK(std::find(sas.begin(), sas.end(), "ab+cd/ef=") != sas.end());        // decoded
  CHECK(std::find(sas.begin(), sas.end(), "sv=2017-07-29&sr=c&sp=rw&se=2099-01-01T00:00:00Z&sig=ab%2Bcd%2Fef%3D") !=
        sas.end());
  // The other parameters alone are not secret.
  CHECK(std::find(sas.begin(), sas.end(), "2017-07-29") == sas.end());
}

TEST_CASE("a tail file keeps the last bytes, from a whole line, and says what it left out", "[diagnostics][files]") {
  TempDir dir;
  std::string all;
  for (int i = 0; i < 20000; ++i) all += "line " + std::to_string(i) + " of the journal\n";
  auto tail = TailFile::create(dir / "ring", 64 << 10);
  REQUIRE(tail);
  std::mt19937 rng(7);
  for (std::size_t at = 0; at < all.size();) {
    std::size_t n = std::min<std::size_t>(all.size() - at, rng() % 5000 + 1);
    REQUIRE(tail->write(std::string_view(all).substr(at, n)));
    at += n;
  }
  REQUIRE(tail->written() == all.size());
  auto bytes = tail->finish(dir / "out");
  REQUIRE(bytes);
  const std::string out = slurp(dir / "out");
  CHECK(out.size() == *bytes);
  CHECK(!std::filesystem::exists(dir / "ring"));
  const std::string first = cut_line(all.size() - (64 << 10));
  REQUIRE(out.starts_with(first));
  const std::string kept = out.substr(first.size());
  CHECK(kept.size() <= 64 << 10);
  CHECK(kept.size() > (64 << 10) - 40);
  CHECK(all.ends_with(kept));
  CHECK(kept.starts_with("line "));
  CHECK(kept.ends_with("line 19999 of the journal\n"));
}

TEST_CASE("a tail file under its cap is copied whole", "[diagnostics][files]") {
  TempDir dir;
  auto tail = TailFile::create(dir / "ring", 1 << 20);
  REQUIRE(tail);
  REQUIRE(tail->write("one\ntwo\n"));
  REQUIRE(tail->finish(dir / "out"));
  CHECK(slurp(dir / "out") == "one\ntwo\n");
}

TEST_CASE("copy_tail: a file's last bytes, mode 0600, and a FIFO refused", "[diagnostics][files]") {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 1000; ++i) text += "entry " + std::to_string(i) + "\n";
  dir.write("state.json", text);
  auto c = copy_tail(dir / "state.json", dir / "copy", 100);
  REQUIRE(c);
  const std::string out = slurp(dir / "copy");
  CHECK(c->left_out == text.size() - 100);
  CHECK(out.starts_with(cut_line(c->left_out)));
  CHECK(out.ends_with("entry 999\n"));
  CHECK(text.ends_with(out.substr(cut_line(c->left_out).size())));
  struct stat st {};
  REQUIRE(::stat((dir / "copy").c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);

  REQUIRE(::mkfifo((dir / "fifo").c_str(), 0600) == 0);
  auto f = copy_tail(dir / "fifo", dir / "copy2", 100);
  REQUIRE(!f);
  CHECK(f.error().message.find("a FIFO, not a regular file") != std::string::npos);
}

TEST_CASE("scrub_file rewrites a file without its secrets, and sha256_file hashes one", "[diagnostics][files]") {
  TempDir dir;
  std::string text;
  for (int i = 0; i < 100000; ++i) text += i % 1000 == 0 ? "key=hunter2-secret\n" : "nothing here\n";
  dir.write("f", text);
  Scrubber s({"hunter2-secret"});
  auto size = scrub_file(dir / "f", s);
  REQUIRE(size);
  const std::string out = slurp(dir / "f");
  CHECK(out.find("hunter2-secret") == std::string::npos);
  CHECK(s.replaced() == 100);
  CHECK(*size == out.size());
  dir.write("abc", "abc");
  CHECK(sha256_file(dir / "abc").value() == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
}
