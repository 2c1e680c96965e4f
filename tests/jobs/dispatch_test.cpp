// The dispatch plan on its own: slots, GPUs, the queue's order, jobs that can never run.
#include <catch2/catch.hpp>

#include "agent/jobs/dispatch.hpp"
#include "agent/jobs/queue.hpp"

using namespace instanced::jobs;

namespace {

// Ids are string literals: a Waiting views its job's id.
Waiting cpu(std::string_view id) { return {id, {}}; }
Waiting gpu(std::string_view id, unsigned n) { return {id, {false, n}}; }
Waiting all_gpus(std::string_view id) { return {id, {true, 0}}; }

std::vector<std::string> ids(const DispatchPlan& p) {
  std::vector<std::string> out;
  for (const auto& s : p.start) out.push_back(s.id);
  return out;
}

const GpuView kFour{true, 4, {0, 1, 2, 3}};

}  // namespace

TEST_CASE("jobs start in queue order, as many as there are free slots", "[jobs][dispatch]") {
  auto p = plan_dispatch({cpu("a"), cpu("b"), cpu("c")}, 2, GpuView{}, {});
  CHECK(ids(p) == std::vector<std::string>{"a", "b"});
  CHECK(p.never.empty());
  CHECK_FALSE(p.gpu_blocked);
  CHECK(plan_dispatch({cpu("a")}, 0, GpuView{}, {}).start.empty());
}

TEST_CASE("GPU jobs get free GPUs of their own, lowest first", "[jobs][dispatch]") {
  auto p = plan_dispatch({gpu("a", 2), gpu("b", 1), cpu("c")}, 10, kFour, {1, 2, 3});
  REQUIRE(p.start.size() == 3);
  CHECK(p.start[0].gpus == std::vector<unsigned>{1, 2});
  CHECK(p.start[1].gpus == std::vector<unsigned>{3});
  CHECK(p.start[2].gpus.empty());
}

TEST_CASE("a GPU job that does not fit blocks later GPU jobs, not CPU jobs", "[jobs][dispatch]") {
  // "big" waits for three GPUs; "small" would fit in the two free ones but must not pass it.
  auto p = plan_dispatch({gpu("big", 3), gpu("small", 1), cpu("c")}, 10, kFour, {0, 1});
  CHECK(ids(p) == std::vector<std::string>{"c"});
  CHECK(p.gpu_blocked);
}

TEST_CASE("'all' GPUs waits until every usable GPU is free", "[jobs][dispatch]") {
  CHECK(plan_dispatch({all_gpus("a")}, 1, kFour, {0, 1, 2}).start.empty());
  auto p = plan_dispatch({all_gpus("a")}, 1, kFour, {0, 1, 2, 3});
  REQUIRE(p.start.size() == 1);
  CHECK(p.start[0].gpus == std::vector<unsigned>{0, 1, 2, 3});
}

TEST_CASE("more GPUs than the instance has: never, once the GPUs are known", "[jobs][dispatch]") {
  auto p = plan_dispatch({gpu("huge", 8), cpu("c")}, 10, kFour, {0, 1, 2, 3});
  REQUIRE(p.never.size() == 1);
  CHECK(p.never[0].id == "huge");
  CHECK(p.never[0].reason == "gpus: 8 wanted; this instance has 4");
  CHECK(ids(p) == std::vector<std::string>{"c"});
  // Not sampled yet: it waits (the GPUs may come), blocking later GPU jobs.
  auto unknown = plan_dispatch({gpu("huge", 8), gpu("one", 1)}, 10, GpuView{}, {});
  CHECK(unknown.never.empty());
  CHECK(unknown.start.empty());
  CHECK(unknown.gpu_blocked);
  auto none = plan_dispatch({all_gpus("a")}, 10, GpuView{true, 0, {}}, {});
  REQUIRE(none.never.size() == 1);
  CHECK(none.never[0].reason == "gpus: all wanted; this instance has 0");
}

namespace {

// A queued job of the queue (JobQueue keeps pointers to it).
std::unique_ptr<JobRecord> queued(std::uint64_t seq, std::string id, unsigned gpus) {
  auto j = std::make_unique<JobRecord>();
  j->seq = seq;
  j->spec.id = std::move(id);
  j->spec.gpus.count = gpus;
  return j;
}

// Every job the walk handed out, in order.
struct Recorded final : QueueCursor {
  explicit Recorded(QueueWalk& w) : walk(w) {}
  std::optional<Waiting> next() override {
    auto w = walk.next();
    if (w) seen.emplace_back(w->id);
    return w;
  }
  void skip_gpu_jobs() override { walk.skip_gpu_jobs(); }
  QueueWalk& walk;
  std::vector<std::string> seen;
};

}  // namespace

TEST_CASE("behind a blocked GPU job only the CPU jobs are walked, unless a GPU job may have become a never",
          "[jobs][dispatch]") {
  std::vector<std::unique_ptr<JobRecord>> jobs;
  jobs.push_back(queued(1, "g1", 2));
  jobs.push_back(queued(2, "g2", 1));
  jobs.push_back(queued(3, "huge", 8));
  jobs.push_back(queued(4, "c1", 0));
  jobs.push_back(queued(5, "g3", 1));
  jobs.push_back(queued(6, "c2", 0));
  JobQueue q;
  for (auto& j : jobs) q.add(*j);
  CHECK(q.size() == 6);
  CHECK(q.cpu_jobs().size() == 2);
  // One GPU free: g1 (two) blocks; the GPU jobs behind it are left out.
  QueueWalk skipping(q, true);
  Recorded a(skipping);
  auto p = plan_dispatch(a, 10, kFour, {3});
  CHECK(ids(p) == std::vector<std::string>{"c1", "c2"});
  CHECK(p.gpu_blocked);
  CHECK(a.seen == std::vector<std::string>{"g1", "c1", "c2"});
  CHECK_FALSE(skipping.saw_every_job());
  // Not allowed to skip (the GPUs changed since the last full walk): "huge" is found.
  QueueWalk full(q, false);
  Recorded b(full);
  p = plan_dispatch(b, 10, kFour, {3});
  CHECK(b.seen == std::vector<std::string>{"g1", "g2", "huge", "c1", "g3", "c2"});
  REQUIRE(p.never.size() == 1);
  CHECK(p.never[0].id == "huge");
  CHECK(ids(p) == std::vector<std::string>{"c1", "c2"});
  CHECK(full.saw_every_job());
  q.remove(4);
  CHECK(q.cpu_jobs().size() == 1);
  CHECK(q.size() == 5);
}
