// The dispatch plan on its own: slots, GPUs, the queue's order, jobs that can never run.
#include <catch2/catch.hpp>

#include "agent/jobs/dispatch.hpp"

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
