// Which queued jobs start now: slots, GPUs and the order of the queue (docs/jobs.md). I/O-free:
// the queue takes the plan and carries it out (records, spawns), tests give it inputs.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "agent/jobs/spec.hpp"

namespace instanced::jobs {

// The instance's GPUs as the job queue sees them.
struct GpuView {
  bool known = false;            // sampled at least once
  std::size_t total = 0;         // GPUs present
  std::vector<unsigned> usable;  // healthy (or degraded) ones: what a job may get
};

struct Waiting {
  std::string_view id;  // the queued job's own (the plan copies what it keeps)
  GpuRequest gpus;
};

struct DispatchPlan {
  struct Start {
    std::string id;
    std::vector<unsigned> gpus;  // given to it (none for a CPU job)
  };
  struct Never {
    std::string id;
    std::string reason;  // more GPUs than the instance has
  };
  std::vector<Start> start;  // in queue order
  std::vector<Never> never;  // fail these: they can never run here
  bool gpu_blocked = false;  // a GPU job waits for GPUs: look again when they change
};

// Why a job can never run here: more GPUs than the instance has (once they are known).
std::optional<std::string> never_fits(const GpuRequest& want, const GpuView& view);
// How many GPUs the job takes: its count, or every usable one for "all".
std::size_t gpus_taken(const GpuRequest& want, const GpuView& view);
// Whether the job's GPUs can be given now from `free` (usable ones no job holds).
bool gpus_fit(const GpuRequest& want, const GpuView& view, const std::vector<unsigned>& free);

// What plan_dispatch walks: the queue in order. Once a GPU job is blocked only CPU jobs can
// start behind it: skip_gpu_jobs() lets the cursor leave out the GPU jobs from there on (the
// job queue's cursor does so when none of them can have become a "never fits").
class QueueCursor {
 public:
  virtual ~QueueCursor() = default;
  virtual std::optional<Waiting> next() = 0;  // none: the end of the queue
  virtual void skip_gpu_jobs() {}
};

// `queue` in order; `free_slots` jobs may start; `free_gpus`: usable GPUs no job holds.
// A GPU job that does not fit blocks the GPU jobs behind it (no starvation by smaller ones);
// CPU jobs pass it.
DispatchPlan plan_dispatch(QueueCursor& queue, std::size_t free_slots, const GpuView& view,
                           std::vector<unsigned> free_gpus);
// The same over every job of a list (none skipped).
DispatchPlan plan_dispatch(const std::vector<Waiting>& queue, std::size_t free_slots, const GpuView& view,
                           std::vector<unsigned> free_gpus);

}  // namespace instanced::jobs
