// The output of one script run: written to a per-run log file capped at `max_bytes`
// (the first half and the last half are kept, with a line saying what was cut between
// them), split into lines for the journal (non-UTF-8 bytes escaped), and the last lines
// kept for the result event. Memory is bounded by max_bytes / 2 whatever the output.
//
// Readers see the output as a stream of "produced" offsets: bytes 0..head from the file,
// then, once the head is full, the last max_bytes/2 from memory while the run goes on, or
// from the file's tail once it has ended. An offset inside the cut part skips to what is
// kept, and says how much was skipped.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/json/object.hpp>

#include "common/fs.hpp"

namespace instanced {

// Where the parts of a finished log are: enough to map produced offsets to file offsets.
struct LogLayout {
  std::uint64_t produced = 0;  // bytes the script wrote
  std::uint64_t head = 0;      // bytes at the start of the file
  std::uint64_t marker = 0;    // length of the "cut" line after the head (0: nothing cut)
  std::uint64_t tail = 0;      // bytes after the marker: the last `tail` produced

  boost::json::object to_json() const;
  static LogLayout from_json(const boost::json::object& o);
};

struct LogChunk {
  std::string data;
  std::uint64_t next = 0;     // the offset to ask for next
  std::uint64_t skipped = 0;  // bytes cut from the log between the offset asked and data
};

// Reads from a finished log file.
LogChunk read_finished_log(const std::filesystem::path& file, const LogLayout& layout, std::uint64_t from,
                           std::size_t max);

// Reads a running log from another process: the head from `file`, the kept tail from the
// writer's `shared_tail` (see RunLog). Nothing when there is no shared tail (the run has
// not started, or has ended: then its layout says where the output is), or when the
// writer changed it under every one of a few tries.
std::optional<LogChunk> read_live_log(const std::filesystem::path& file, const std::filesystem::path& shared_tail,
                                      std::uint64_t from, std::size_t max);

class RunLog {
 public:
  using LineSink = std::function<void(std::string_view escaped_line)>;

  // Creates `file` (mode 0600). A file that cannot be written is reported by error() and
  // the run goes on: lines still reach the journal and the tail.
  // With `shared_tail`, the kept tail lives in that file (mode 0600, mapped shared) rather
  // than in this process's memory, with a header that says where the stream stands, so
  // that another process can follow the output (read_live_log): the workload monitor's
  // log, read by the agent. The file is removed by finish().
  RunLog(std::filesystem::path file, std::uint64_t max_bytes, std::size_t tail_lines, LineSink to_journal,
         std::filesystem::path shared_tail = {});
  ~RunLog();
  RunLog(const RunLog&) = delete;
  RunLog& operator=(const RunLog&) = delete;

  void feed(std::string_view bytes);
  // Flushes the last partial line, writes the cut marker and the kept tail.
  LogLayout finish();

  LogChunk read(std::uint64_t from, std::size_t max) const;
  // The last `tail_lines` lines, escaped, each cut to kMaxTailLine bytes.
  std::vector<std::string> last_lines() const;
  std::uint64_t produced() const { return produced_; }
  const std::filesystem::path& file() const { return file_; }
  const std::optional<std::string>& error() const { return error_; }

  // Lines forwarded to the journal per run, at most this many bytes; the rest only in the file.
  static constexpr std::size_t kMaxLine = 4096;       // longer lines are split
  static constexpr std::size_t kMaxTailLine = 512;    // lines in the event are cut to this

 private:
  void write_file(std::string_view bytes);
  void line(std::string_view raw);
  void map_shared_tail();
  void publish();  // the shared header, after each change
  char* ring() { return ring_data_; }
  const char* ring() const { return ring_data_; }
  std::string ring_copy() const;  // the kept tail, in order

  std::filesystem::path file_;
  Fd fd_;
  std::uint64_t head_cap_;
  std::uint64_t tail_cap_;
  std::uint64_t journal_budget_;
  std::size_t tail_lines_;
  LineSink to_journal_;
  std::uint64_t produced_ = 0;
  std::uint64_t head_written_ = 0;
  std::uint64_t in_file_ = 0;  // bytes that really reached the file
  std::vector<char> ring_;  // the last tail_cap_ bytes after the head, circular (in memory)
  std::filesystem::path shared_path_;
  void* shared_map_ = nullptr;  // the shared tail's mapping: a header, then the ring
  std::size_t shared_len_ = 0;
  char* ring_data_ = nullptr;  // ring_'s data or the shared ring
  std::size_t ring_cap_ = 0;
  std::size_t ring_start_ = 0;
  std::size_t ring_size_ = 0;
  std::string partial_;  // the line being assembled
  std::deque<std::string> lines_;
  bool journal_cut_ = false;
  std::optional<std::string> error_;
  std::optional<LogLayout> finished_;
  std::vector<std::string> last_;  // last_lines() at finish
};

}  // namespace instanced
