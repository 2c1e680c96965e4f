#include "agent/jobs/dispatch.hpp"

#include <fmt/format.h>
#include <optional>

namespace instanced::jobs {

std::optional<std::string> never_fits(const GpuRequest& want, const GpuView& view) {
  if (!view.known || !(want.all ? view.total == 0 : want.count > view.total)) return std::nullopt;
  return fmt::format("gpus: {} wanted; this instance has {}", want.all ? std::string("all") : std::to_string(want.count),
                     view.total);
}

std::size_t gpus_taken(const GpuRequest& want, const GpuView& view) { return want.all ? view.usable.size() : want.count; }

bool gpus_fit(const GpuRequest& want, const GpuView& view, const std::vector<unsigned>& free) {
  const std::size_t n = gpus_taken(want, view);
  return view.known && n > 0 && free.size() >= n && (!want.all || free.size() == view.usable.size());
}

DispatchPlan plan_dispatch(QueueCursor& queue, std::size_t free_slots, const GpuView& view,
                           std::vector<unsigned> free_gpus) {
  DispatchPlan plan;
  while (plan.start.size() < free_slots) {
    std::optional<Waiting> it = queue.next();
    if (!it) break;
    std::vector<unsigned> give;
    if (it->gpus.any()) {
      if (auto never = never_fits(it->gpus, view)) {
        plan.never.push_back({std::string(it->id), std::move(*never)});
        continue;
      }
      if (plan.gpu_blocked) continue;
      if (!gpus_fit(it->gpus, view, free_gpus)) {
        plan.gpu_blocked = true;
        queue.skip_gpu_jobs();
        continue;
      }
      const auto want = static_cast<std::ptrdiff_t>(gpus_taken(it->gpus, view));
      give.assign(free_gpus.begin(), free_gpus.begin() + want);
      free_gpus.erase(free_gpus.begin(), free_gpus.begin() + want);
    }
    plan.start.push_back({std::string(it->id), std::move(give)});
  }
  return plan;
}

DispatchPlan plan_dispatch(const std::vector<Waiting>& queue, std::size_t free_slots, const GpuView& view,
                           std::vector<unsigned> free_gpus) {
  struct Every final : QueueCursor {
    explicit Every(const std::vector<Waiting>& q) : at(q.begin()), end(q.end()) {}
    std::optional<Waiting> next() override { return at == end ? std::nullopt : std::optional<Waiting>(*at++); }
    std::vector<Waiting>::const_iterator at, end;
  } every(queue);
  return plan_dispatch(every, free_slots, view, std::move(free_gpus));
}

}  // namespace instanced::jobs
