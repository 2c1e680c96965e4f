// The job store (docs/jobs.md "The record"): one append-only journal, state_dir/jobs/journal,
// instead of a file and two fsyncs per change. Each change of a job appends a line,
// "CRC R RECORD" (the job's whole record) or "CRC F ID" (a job forgotten), CRC being the
// CRC-32 of what follows it. One fdatasync makes every line appended before it durable, so
// a burst of changes shares it (group commit): the agent runs syncer() on a thread of its own and
// tells synced() how far it reached; commit() does both at once (at exit). At start the
// last line of each job wins; a last line cut short by a crash is ignored, a damaged one is
// reported with its number. Once the file holds more than twice what is live (and over
// 1 MiB), it is rewritten atomically with the live records alone (off the agent's loop:
// begin_compaction()).
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
  std::size_t size() const { return file_bytes_; }  // the file's length as written

  // Whether the file holds more than twice what is live (and no compaction is under way);
  // compact() rewrites it with `live`, here and now (at start).
  bool wants_compaction() const;
  Result<void> compact(const std::vector<const JobRecord*>& live);
  // The same off this thread, in three steps. begin_compaction() returns the new file's
  // text, for another thread to write durably to replacement(); lines appended meanwhile go
  // to the journal as ever and are kept. finish_compaction(), back here, appends them to the
  // replacement and renames it over the journal; the next sync makes that durable (syncer()
  // then syncs the folder too). abandon_compaction() when the replacement was not written:
  // the next is wanted once the file has grown by another MiB.
  std::string begin_compaction(const std::vector<const JobRecord*>& live);
  std::filesystem::path replacement() const { return file_.string() + ".new"; }
  Result<void> finish_compaction();
  void abandon_compaction();

  // A line as written, and one read back (for the tests and the fuzz target).
  static std::string record_line(const JobRecord& job);
  static std::string forget_line(const std::string& id);

 private:
  Result<void> write(std::string line, const std::string& id);
  std::string snapshot(const std::vector<const JobRecord*>& live);  // the live records' text

  Filesystem& fs_;
  std::filesystem::path file_;
  std::map<std::string, std::size_t> live_;  // each job's last line's size
  std::size_t live_bytes_ = 0;
  std::size_t file_bytes_ = 0;
  std::uint64_t written_ = 0;
  std::uint64_t synced_ = 0;
  bool compacting_ = false;
  std::string kept_;                 // lines appended while compacting
  std::size_t compacted_bytes_ = 0;  // the replacement's size as begun
  std::uint64_t renamed_ = 0;        // written_ when the replacement was renamed (durable once synced past it)
  std::size_t retry_above_ = 0;      // after a compaction failed: not again below this size
};

}  // namespace instanced::jobs
