// The queued jobs in order (by seq), and the CPU jobs among them kept apart as well: behind a
// GPU job that waits for GPUs only CPU jobs can start, and dispatch() then walks those alone
// (bench/jobs: a CPU job submitted behind 10,000 GPU jobs that wait).
#pragma once

#include <cstdint>
#include <map>

#include "agent/jobs/dispatch.hpp"
#include "agent/jobs/spec.hpp"

namespace instanced::jobs {

class JobQueue {
 public:
  using Map = std::map<std::uint64_t, JobRecord*>;

  void add(JobRecord& job) {
    all_[job.seq] = &job;
    if (!job.spec.gpus.any()) cpu_[job.seq] = &job;
  }
  void remove(std::uint64_t seq) {
    all_.erase(seq);
    cpu_.erase(seq);
  }
  bool empty() const { return all_.empty(); }
  std::size_t size() const { return all_.size(); }
  Map::const_iterator begin() const { return all_.begin(); }
  Map::const_iterator end() const { return all_.end(); }
  const Map& all() const { return all_; }
  const Map& cpu_jobs() const { return cpu_; }

 private:
  Map all_;
  Map cpu_;
};

// plan_dispatch's walk of the queue: every job in order, and, once told that only CPU jobs
// can start (and allowed to), the CPU jobs after the current one alone.
class QueueWalk final : public QueueCursor {
 public:
  QueueWalk(const JobQueue& queue, bool may_skip) : map_(&queue.all()), at_(queue.begin()), cpu_(&queue.cpu_jobs()), may_skip_(may_skip) {}

  std::optional<Waiting> next() override {
    if (at_ == map_->end()) {
      at_end_ = true;
      return std::nullopt;
    }
    const JobRecord& job = *(at_++)->second;
    return Waiting{job.spec.id, job.spec.gpus};
  }
  void skip_gpu_jobs() override {
    if (!may_skip_ || skipped_ || at_ == map_->end()) return;
    at_ = cpu_->lower_bound(at_->first);
    map_ = cpu_;
    skipped_ = true;
  }
  // The walk reached the end of the queue without leaving a job out.
  bool saw_every_job() const { return at_end_ && !skipped_; }

 private:
  const JobQueue::Map* map_;
  JobQueue::Map::const_iterator at_;
  const JobQueue::Map* cpu_;
  bool may_skip_;
  bool skipped_ = false;
  bool at_end_ = false;
};

}  // namespace instanced::jobs
