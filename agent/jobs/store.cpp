// The job store: one JSON file per job in state_dir/jobs, loaded at start, pruned.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

// ---- the store ---------------------------------------------------------------------------

void Jobs::load() {
  fs::path dir = fs::path(state_dir_) / "jobs";
  if (auto r = api_.fs.create_directories(dir, 0700); !r) {
    store_error_ = r.error().message;
    return;
  }
  std::error_code ec;
  std::size_t bad = 0;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path& file = it->path();
    if (file.extension() != ".json" || file.filename().string().starts_with(".")) continue;
    auto text = api_.fs.read_file(file, 1 << 20);
    auto rec = text ? JobRecord::parse(*text) : Result<JobRecord>(text.error());
    if (!rec || rec->spec.id + ".json" != file.filename().string()) {
      // Kept aside for a person, never silently dropped.
      std::string why = rec ? "its id does not match the file name" : rec.error().message;
      log_->error("job file {} is unreadable ({}); moved to {}.bad", file.string(), why, file.filename().string());
      std::error_code rc;
      fs::rename(file, fs::path(file.string() + ".bad"), rc);
      ++bad;
      continue;
    }
    auto job = std::make_unique<JobRecord>(std::move(*rec));
    next_seq_ = std::max(next_seq_, job->seq + 1);
    if (job->state == JobState::queued)
      queue_[job->seq] = job.get();
    else if (is_finished(job->state))
      finished_[job->seq] = job->spec.id;
    jobs_[job->spec.id] = std::move(job);
  }
  if (!jobs_.empty() || bad)
    log_->info("{} jobs read from {} ({} queued){}", jobs_.size(), dir.string(), queue_.size(),
               bad ? fmt::format(", {} unreadable", bad) : "");
}

// state_dir/jobs/ID.json (the record) and ID.env (a container job's variables).
fs::path Jobs::store_file(const std::string& id, const char* extension) const {
  return fs::path(state_dir_) / "jobs" / (id + extension);
}

Result<void> Jobs::persist(const JobRecord& job) {
  auto r = api_.fs.write_file_atomic(store_file(job.spec.id, ".json"), job.to_text(), 0600);
  if (!r) {
    if (!store_error_) log_->error("cannot record job {}: {}", job.spec.id, r.error().message);
    store_error_ = r.error().message;
    return r;
  }
  if (store_error_) log_->info("job state recorded again");
  store_error_.reset();
  return {};
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
    std::error_code ec;
    fs::remove(store_file(id, ".json"), ec);
    if (!j->second->log.empty()) fs::remove(j->second->log, ec);
    jobs_.erase(j);
  }
}

}  // namespace instanced::jobs
