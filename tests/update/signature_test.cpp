// The package signature: Ed25519 over "instanced-update VERSION sha256:HEX", made here by
// the openssl command line as a release process would, checked by the agent's code.
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "agent/update/signature.hpp"
#include "common/text.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/packages.hpp"

using namespace instanced;
using namespace instanced::testing;

namespace {

const std::string kSha = std::string(64, 'a');

// `text` signed by DIR/NAME.pem.
std::string sign_text(const TempDir& dir, const std::string& name, const std::string& text) {
  dir.write("message", text);
  auto sig = run_command(fmt::format("openssl pkeyutl -sign -rawin -inkey {} -in {} | base64 -w0",
                                     (dir / (name + ".pem")).string(), (dir / "message").string()));
  REQUIRE(sig.exit_code == 0);
  return sig.output;
}

}  // namespace

TEST_CASE("base64: round trips, and what is not base64 is refused", "[update][signature]") {
  for (const std::string& s : std::vector<std::string>{"", "a", "ab", "abc", "abcd", std::string("\0\xff\x10", 3)})
    CHECK(base64_decoded(base64_encoded(s)) == s);
  CHECK(base64_encoded("abcd") == "YWJjZA==");
  CHECK_FALSE(base64_decoded("YWJjZA="));    // not a multiple of 4
  CHECK_FALSE(base64_decoded("YW=jZA=="));   // padding inside
  CHECK_FALSE(base64_decoded("YWJj!A=="));   // outside the alphabet
}

TEST_CASE("update signatures: the listed key's accepted, any change or other key refused", "[update][signature]") {
  TempDir dir;
  const std::string a = new_key(dir, "a"), b = new_key(dir, "b");
  const std::string text = update::signed_text("1.2.3", kSha);
  CHECK(text == "instanced-update 1.2.3 sha256:" + kSha);
  const std::string by_a = sign_text(dir, "a", text);

  SECTION("signed by the one key listed") { CHECK(update::verify(text, by_a, {a}).value() == 0); }
  SECTION("keys rotate: the second of two listed keys made it") { CHECK(update::verify(text, by_a, {b, a}).value() == 1); }
  SECTION("another version or another hash under the same signature: refused") {
    auto other_version = update::verify(update::signed_text("1.2.4", kSha), by_a, {a});
    REQUIRE_FALSE(other_version);
    CHECK(other_version.error().message == "signature: made by none of the 1 key(s) in update.public_keys");
    CHECK_FALSE(update::verify(update::signed_text("1.2.3", std::string(64, 'b')), by_a, {a}));
  }
  SECTION("a key that is not listed: refused") { CHECK_FALSE(update::verify(text, by_a, {b})); }
  SECTION("a signature that is not one: refused, saying so") {
    auto r = update::verify(text, "not-base64!", {a});
    REQUIRE_FALSE(r);
    CHECK(r.error().message == "signature: not base64 of 64 bytes (an Ed25519 signature)");
    CHECK_FALSE(update::verify(text, base64_encoded(std::string(64, 'x')), {a}));
  }
}
