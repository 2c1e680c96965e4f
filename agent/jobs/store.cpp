// The job store: the journal in state_dir/jobs (journal.hpp), loaded at start, pruned and
// compacted. Files of one job each, as agents before the journal wrote them, are read once
// and moved into it.
#include "agent/jobs/internal.hpp"

#include <boost/asio/detached.hpp>

namespace instanced::jobs {

namespace {
constexpr std::size_t kMaxLegacyFile = 1 << 20;
constexpr auto kSyncTimeout = 30s;  // one fdatasync of the journal, on a disk that may hang
}  // namespace

// ---- the store ---------------------------------------------------------------------------

void Jobs::load() {
  const fs::path dir = fs::path(state_dir_) / "jobs";
  if (auto r = api_.fs.create_directories(dir, 0700); !r) {
    store_error_ = r.error().message;
    return;
  }
  auto loaded = journal_.load();
  if (!loaded) {
    // Unreadable as a whole (not a regular file, too large): kept for a person, a new one begun.
    log_->error("the job journal {} cannot be read ({}); moved to {}.bad", journal_.file().string(),
                loaded.error().message, journal_.file().filename().string());
    std::error_code ec;
    fs::rename(journal_.file(), fs::path(journal_.file().string() + ".bad"), ec);
    loaded = JobJournal::Loaded{};
  }
  if (!loaded->problems.empty()) keep_damaged_journal(loaded->problems);
  for (auto& rec : loaded->records) adopt(std::make_unique<JobRecord>(std::move(rec)));
  const std::size_t legacy = load_legacy_files(dir);
  // A damaged journal or legacy files: rewritten at once, with what was read.
  if (!loaded->problems.empty() || legacy) compact_store();
  if (!jobs_.empty())
    log_->info("{} jobs read from {} ({} queued){}", jobs_.size(), journal_.file().string(), queue_.size(),
               legacy ? fmt::format(", {} of them from the files of an earlier version", legacy) : "");
}

void Jobs::adopt(std::unique_ptr<JobRecord> job) {
  next_seq_ = std::max(next_seq_, job->seq + 1);
  if (job->state == JobState::queued)
    queue_.add(*job);
  else if (is_finished(job->state))
    finished_[job->seq] = job->spec.id;
  const std::string id = job->spec.id;
  jobs_[id] = std::move(job);
}

// What was read is kept; the damaged lines are named and the file kept beside for a person.
void Jobs::keep_damaged_journal(const std::vector<std::string>& problems) {
  const fs::path copy = journal_.file().string() + ".bad";
  std::error_code ec;
  fs::copy_file(journal_.file(), copy, fs::copy_options::overwrite_existing, ec);
  for (const auto& p : problems) log_->error("job journal {}: {}", journal_.file().string(), p);
  log_->error("the job journal had {} damaged line(s); a copy is kept as {}", problems.size(), copy.string());
}

// ID.json files of agents before the journal: read into it, then removed.
std::size_t Jobs::load_legacy_files(const fs::path& dir) {
  std::size_t n = 0;
  std::error_code ec;
  std::vector<fs::path> files;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".json" && !it->path().filename().string().starts_with("."))
      files.push_back(it->path());
  for (const fs::path& file : files) {
    auto text = api_.fs.read_file(file, kMaxLegacyFile);
    auto rec = text ? JobRecord::parse(*text) : Result<JobRecord>(text.error());
    if (!rec || rec->spec.id + ".json" != file.filename().string()) {
      // Kept aside for a person, never silently dropped.
      std::string why = rec ? "its id does not match the file name" : rec.error().message;
      log_->error("job file {} is unreadable ({}); moved to {}.bad", file.string(), why, file.filename().string());
      fs::rename(file, fs::path(file.string() + ".bad"), ec);
      continue;
    }
    if (!jobs_.contains(rec->spec.id)) adopt(std::make_unique<JobRecord>(std::move(*rec)));
    legacy_files_.push_back(file);
    ++n;
  }
  return n;
}

// The jobs remembered, in the order they were submitted: a rewritten journal's lines.
std::vector<const JobRecord*> Jobs::store_order() const {
  std::vector<const JobRecord*> live;
  live.reserve(jobs_.size());
  for (const auto& [id, job] : jobs_) live.push_back(job.get());
  std::sort(live.begin(), live.end(), [](const JobRecord* a, const JobRecord* b) { return a->seq < b->seq; });
  return live;
}

// The journal rewritten with the jobs remembered, here and now (at start); legacy files go
// once it is written.
void Jobs::compact_store() {
  if (auto r = journal_.compact(store_order()); !r) {
    store_failed(r.error().message);
    return;
  }
  std::error_code ec;
  for (const auto& f : legacy_files_) fs::remove(f, ec);
  legacy_files_.clear();
}

// state_dir/jobs/ID.run (a job's run folder) and ID.env (a container job's variables).
fs::path Jobs::store_file(const std::string& id, const char* extension) const {
  return fs::path(state_dir_) / "jobs" / (id + extension);
}

void Jobs::store_failed(const std::string& why) {
  if (!store_error_) log_->error("cannot record jobs in {}: {}", journal_.file().string(), why);
  store_error_ = why;
}

// The job's record appended; durable at the next sync, at the latest one begun at the end
// of this turn of the loop (one fdatasync for every change made in it).
Result<void> Jobs::persist(const JobRecord& job) {
  auto r = journal_.append(job);
  if (!r) {
    store_failed(r.error().message);
    return r;
  }
  if (journal_.wants_compaction() && !compaction_asked_) {
    compaction_asked_ = true;
    asio::co_spawn(ex_, compact_journal(), asio::detached);
  }
  if (!commit_posted_) {
    commit_posted_ = true;
    asio::post(ex_, [this, alive = std::weak_ptr<bool>(alive_)] {
      if (alive.expired()) return;
      commit_posted_ = false;
      asio::co_spawn(ex_, sync_journal(), asio::detached);
    });
  }
  return {};
}

asio::awaitable<void> Jobs::sync_journal() { (void)co_await durable(); }

// Everything recorded so far durable (before a submission is answered, before a queued job
// starts). The fdatasync runs on a thread of its own, never on the loop; the changes made
// while one runs share the next (group commit).
asio::awaitable<Result<void>> Jobs::durable() {
  const std::uint64_t want = journal_.written();
  while (journal_.durable() < want) {
    auto turn = co_await journal_turn_.acquire();
    if (journal_.durable() >= want) break;  // the sync that ran meanwhile reached it
    const std::uint64_t upto = journal_.written();
    const auto sync = journal_.syncer();  // named: no temporary inside co_await (docs/architecture.md, GCC 12)
    auto r = co_await sync_pool_.run("syncing the job journal", kSyncTimeout, sync);
    if (!r) {
      store_failed(r.error().message);
      co_return r;
    }
    journal_.synced(upto);
    if (store_error_) log_->info("job state recorded again");
    store_error_.reset();
  }
  co_return Result<void>{};
}

// The journal rewritten with the live records off the loop (journal.hpp, begin_compaction):
// the new file is written and synced on the journal's thread while no sync runs; changes
// made meanwhile are appended as ever and kept for it. Then the next sync makes it durable.
asio::awaitable<void> Jobs::compact_journal() {
  Result<void> r = Error{"not written"};
  {
    auto turn = co_await journal_turn_.acquire();
    compaction_asked_ = false;
    if (!journal_.wants_compaction()) co_return;
    const std::size_t was = journal_.size();
    const auto write = [&fs = api_.fs, file = journal_.replacement(), text = journal_.begin_compaction(store_order())] {
      return fs.write_file_atomic(file, text, 0600, true);
    };
    try {
      r = co_await sync_pool_.run("rewriting the job journal", kSyncTimeout, write);
    } catch (...) {  // the agent is stopping
      journal_.abandon_compaction();
      throw;
    }
    if (r) r = journal_.finish_compaction();
    if (!r) {
      journal_.abandon_compaction();
      log_->warn("cannot rewrite the job journal {} (it goes on growing): {}", journal_.file().string(), r.error().message);
      co_return;
    }
    log_->info("job journal rewritten with what is live: {} to {}", format_size(ByteSize{was}),
               format_size(ByteSize{journal_.size()}));
  }
  (void)co_await durable();
}

void Jobs::prune() {
  auto it = finished_.begin();
  while (finished_.size() > static_cast<std::size_t>(config_.keep_finished) && it != finished_.end()) {
    std::string id = it->second;
    if (live_.contains(id)) {  // still being wrapped up: pruned at a later turn
      ++it;
      continue;
    }
    it = finished_.erase(it);
    auto j = jobs_.find(id);
    if (j == jobs_.end()) continue;
    if (auto r = journal_.forget(id); !r) store_failed(r.error().message);
    std::error_code ec;
    if (!j->second->log.empty()) fs::remove(j->second->log, ec);
    jobs_.erase(j);
  }
}

}  // namespace instanced::jobs
