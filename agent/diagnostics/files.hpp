// The bundle's file work, all of it blocking: call it through the BlockingPool (the
// agent's files may sit on a slow disk; /proc and /sys reads can block).
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "agent/diagnostics/scrub.hpp"
#include "common/fs.hpp"
#include "common/result.hpp"

namespace instanced::diagnostics {

// The line put where the start of a text was left out to keep within its cap.
std::string cut_line(std::uint64_t left_out);

// Keeps the last `cap` bytes written to it, in a file used as a ring: bounded disk and
// no memory, whatever a tool prints (a journal of 24 h).
class TailFile {
 public:
  // Creates `ring` (mode 0600).
  static Result<TailFile> create(const std::filesystem::path& ring, std::uint64_t cap);
  Result<void> write(std::string_view bytes);
  // Writes what is kept, in order, to `out`: when something was cut, the cut line first and
  // then from the first whole line. Removes the ring. The bytes written to `out`.
  Result<std::uint64_t> finish(const std::filesystem::path& out);
  std::uint64_t written() const { return written_; }

 private:
  TailFile(std::filesystem::path ring, Fd fd, std::uint64_t cap) : ring_(std::move(ring)), fd_(std::move(fd)), cap_(cap) {}
  std::filesystem::path ring_;
  Fd fd_;
  std::uint64_t cap_;
  std::uint64_t written_ = 0;
};

struct Copied {
  std::uint64_t bytes = 0;      // written to the copy
  std::uint64_t left_out = 0;   // bytes of the source's start not copied
};
// The last `max` bytes of the regular file `from` (from its first whole line, after the cut
// line, when cut) into `to` (mode 0600). A file that is not regular is refused ("a FIFO").
Result<Copied> copy_tail(const std::filesystem::path& from, const std::filesystem::path& to, std::uint64_t max);
// The whole text into `to` (mode 0600).
Result<void> write_text(const std::filesystem::path& to, std::string_view text);

// Every secret `scrubber` knows replaced in `file`, through a copy renamed over it. Its
// new size.
Result<std::uint64_t> scrub_file(const std::filesystem::path& file, Scrubber& scrubber);

// The file's SHA-256, lower-case hex.
Result<std::string> sha256_file(const std::filesystem::path& file);

}  // namespace instanced::diagnostics
