// What a diagnostics bundle must never hold: the values of the agent's secrets. They are
// read from the files that hold them and replaced by "***" in everything that goes into a
// bundle, whatever wrote them there (a tool's output, a log line, a state file). I/O-free.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace instanced::diagnostics {

// Shorter values are not taken for secrets: they would redact ordinary words.
inline constexpr std::size_t kMinSecret = 6;

// The secret values in a secret file's text, as the agent reads it (the first line, blanks
// trimmed): that line, what follows its first ':' (the password of "user:password"), a SAS
// token's signature (`sig=` value) on its own, and the
// percent-encoded and percent-decoded spellings of each where they differ.
std::vector<std::string> secrets_in(std::string_view file_text);

// Replaces every occurrence of any secret in a stream fed in pieces of any size (a secret
// cut between two pieces is found too); occurrences that overlap are replaced together
// by one "***". What feed() returns is final; finish() returns the rest.
class Scrubber {
 public:
  explicit Scrubber(std::vector<std::string> secrets);
  std::string feed(std::string_view bytes);
  std::string finish();
  // How many occurrences were replaced so far.
  std::uint64_t replaced() const { return replaced_; }

 private:
  std::string take(std::size_t safe_end);

  std::vector<std::string> secrets_;
  std::size_t hold_ = 0;  // the longest secret's length - 1: kept back for the next piece
  std::string pending_;
  std::size_t covered_ = 0;  // bytes at pending_'s start inside a span already replaced
  std::uint64_t replaced_ = 0;
};

}  // namespace instanced::diagnostics
