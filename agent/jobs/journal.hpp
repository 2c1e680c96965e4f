// The job store (docs/jobs.md "The record"): one append-only journal, state_dir/jobs/journal,
// instead of a file and two fsyncs per change. Each change of a job appends a line,
// "CRC R RECORD" (the job's whole record) or "CRC F ID" (a job forgotten), CRC being the
// CRC-32 of what follows it. One fdatasync makes every line appended before it durable, so
// a burst of changes shares it (group commit): the agent runs syncer() on a thread of its own and
// tells synced() how far it reached; commit() does both at once (at exit). At start the
// last line of each job wins; a last line cut short by a crash is ignored, a damaged one is
// reported with its number. Once the file holds more than twice what is live (and over
// 1 MiB), it is rewritten atomically with the live records alone.
#pragma once

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "agent/jobs/spec.hpp"
#include "common/fs.hpp"
#include "common/result.hpp"

namespace instanced::jobs {

class JobJournal {
 public:
  JobJournal(Filesystem& fs, std::filesystem::path file) : fs_(fs), file_(std::move(file)) {}

  struct Loaded {
    std::vector<JobRecord> records;     // one per job, its last line
    std::vector<std::string> problems;  // "line 7: checksum mismatch"
  };
  // Reads the file (none yet: nothing). Call it once, before any append.
  Result<Loaded> load();

  // The job's record as a line, not yet durable.
  Result<void> append(const JobRecord& job);
  // A job forgotten (pruned): its line, not yet durable.
  Result<void> forget(const std::string& id);
  // Everything appended so far durable, on this thread; nothing to do when nothing is pending.
  Result<void> commit();
  bool pending() const { return synced_ < written_; }
  // Lines written so far (a count that only grows), and those known durable.
  std::uint64_t written() const { return written_; }
  std::uint64_t durable() const { return synced_; }
  // The fdatasync alone, for another thread while lines are appended: it makes durable at
  // least what was written before it began; then synced(what written() was before it). It
  // holds the file system and a copy of the path, not the journal.
  std::function<Result<void>()> syncer() const;
  void synced(std::uint64_t upto) { synced_ = std::max(synced_, upto); }
  // Whether the job has a line in the file (a job that has none yet is new).
  bool has(const std::string& id) const { return live_.contains(id); }
  const std::filesystem::path& file() const { return file_; }

  // Whether the file holds more than twice what is live; compact() rewrites it with `live`.
  bool wants_compaction() const;
  Result<void> compact(const std::vector<const JobRecord*>& live);

  // A line as written, and one read back (for the tests and the fuzz target).
  static std::string record_line(const JobRecord& job);
  static std::string forget_line(const std::string& id);

 private:
  Result<void> write(std::string line, const std::string& id);

  Filesystem& fs_;
  std::filesystem::path file_;
  std::map<std::string, std::size_t> live_;  // each job's last line's size
  std::size_t live_bytes_ = 0;
  std::size_t file_bytes_ = 0;
  std::uint64_t written_ = 0;
  std::uint64_t synced_ = 0;
};

}  // namespace instanced::jobs
