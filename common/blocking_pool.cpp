#include "common/blocking_pool.hpp"

#include <chrono>

namespace instanced {

BlockingPool::BlockingPool(std::size_t threads, std::size_t max_queue)
    : core_(std::make_shared<Core>()), max_queue_(max_queue) {
  for (std::size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([core = core_] {
      for (;;) {
        std::function<void()> job;
        {
          std::unique_lock lock(core->m);
          core->cv.wait(lock, [&] { return core->stopping || !core->queue.empty(); });
          if (core->stopping) return;
          job = std::move(core->queue.front());
          core->queue.pop_front();
          ++core->busy;
        }
        job();
        --core->busy;
        core->cv.notify_all();
      }
    });
  }
}

bool BlockingPool::submit(std::function<void()> job) {
  {
    std::lock_guard lock(core_->m);
    if (core_->stopping || core_->queue.size() >= max_queue_) return false;
    core_->queue.push_back(std::move(job));
  }
  core_->cv.notify_one();
  return true;
}

BlockingPool::~BlockingPool() {
  {
    std::unique_lock lock(core_->m);
    // Give running calls a moment to finish, then abandon the ones that hang.
    core_->cv.wait_for(lock, std::chrono::milliseconds(500), [&] { return core_->busy == 0; });
    core_->stopping = true;
    core_->queue.clear();
  }
  core_->cv.notify_all();
  for (auto& t : threads_) {
    if (core_->busy == 0)
      t.join();
    else
      t.detach();
  }
}

}  // namespace instanced
