// GPU and CUDA health (docs/gpu.md): samples every GPU through NVML (loaded at run time)
// off the event loop with a timeout, collects XID errors from NVML events and the kernel
// log, rates each GPU healthy / degraded / unhealthy / unavailable, inventories the CUDA
// stack, and serves /v1/gpu and instanced_gpu_* metrics. A VM without GPU is normal.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/json/object.hpp>
#include <deque>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "agent/gpu/config.hpp"
#include "agent/gpu/cuda.hpp"
#include "agent/gpu/health.hpp"
#include "agent/gpu/nvml.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/single_flight.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::gpu {

class Gpu final : public Subsystem {
 public:
  Gpu(boost::asio::any_io_executor ex, Api& api, GpuSource& source, const GpuConfig& config);
  ~Gpu() override;

  std::string name() const override { return "gpu"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `gpu` section (kmsg is kept until the next start).
  void reconfigure(const GpuConfig& config);

  // The GPUs a new job may get: sampled, and not unhealthy or unavailable.
  std::vector<unsigned> usable_gpus() const;
  // Whether the GPUs are known (the first look at NVML is over), and how many there are.
  bool sampled() const { return state_ != "starting"; }
  std::size_t count() const { return gpus_.size(); }
  // The busiest GPU's utilisation (percent) at the last sample; nothing without GPUs.
  std::optional<double> busiest_utilization() const;

  boost::json::object status_json() const;
  // For the inventory: the driver's and CUDA's versions, each GPU's model and memory; empty
  // before the first sample and without a working NVIDIA driver.
  boost::json::object inventory_json() const;
  void add_routes(status::Router& router);

 private:
  struct Tracked {
    GpuSample sample;
    std::optional<GpuSample> before;
    Assessment assessment;
    GpuHealth told = GpuHealth::healthy;  // the last health reported in an event
    std::vector<int> xids;                // seen since the agent started
  };
  struct Seen {
    XidEvent event;
    Clock::wall_time at;
    std::optional<unsigned> gpu;
  };

  boost::asio::awaitable<void> sample_once();
  boost::asio::awaitable<void> events_loop();
  struct Kmsg;  // the kernel log reader's state, shared with its worker thread
  void record_xid(XidEvent e);
  void reassess();
  void publish();

  boost::asio::any_io_executor ex_;
  Api& api_;
  GpuSource& source_;
  GpuConfig config_;
  Logger log_;
  SingleFlight calls_;   // sample(): one NVML sweep at a time
  SingleFlight events_;  // wait_xids(): the event wait, a worker of its own
  SingleFlight kmsg_calls_;  // the kernel log's reads, one at a time
  boost::asio::cancellation_signal stop_events_;
  Wake sampled_;  // pulsed when a sample finds GPUs
  std::string state_ = "starting";  // absent, unavailable, no_gpus, sampled, stuck
  std::string state_detail_;
  SystemSample system_;
  std::vector<Tracked> gpus_;
  std::deque<Seen> xids_;  // the last XIDs, newest last
  std::optional<CudaInventory> cuda_;
  Clock::steady_time inventory_due_{};
  std::vector<XidEvent> pending_xids_;  // read from the kernel log, recorded after the sample
  std::shared_ptr<Kmsg> kmsg_;
  bool told_absent_ = false;
};

}  // namespace instanced::gpu
