// What the agent runs on (docs/protocol.md, "Inventory"): sent in every `hello` and
// answered to `get_inventory`. The host's part (OS, kernel, CPUs, memory, disks) is read
// afresh each time from files under /etc, /proc and /sys, on the blocking pool; the GPUs'
// part is the GPU subsystem's last sample; the VM's identity is asked of the cloud's
// instance metadata service (bounded by inventory.metadata_timeout), kept for the agent's
// run once it answered, asked again after a failure (a minute later, doubling to an hour)
// and after its endpoint changes; absent where there is none.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "agent/inventory/config.hpp"
#include "common/api.hpp"
#include "common/clock.hpp"
#include "common/log.hpp"
#include "common/result.hpp"
#include "common/units.hpp"

namespace instanced::inventory {

// The host's part from the files under `root` ("/" on a host; a folder in tests): `os`
// (/etc/os-release), `kernel`, `arch`, `cpu` (count and model, /proc/cpuinfo),
// `memory_bytes` (/proc/meminfo), `disks` (/sys/block entries backed by a device, with
// their sizes). What cannot be read is left out.
boost::json::object host_part(const std::filesystem::path& root);

// The agent itself: version, toolchain, TLS library.
boost::json::object agent_part();

// Azure IMDS's compute document as `cloud`: provider, vm_id, size, region, image. An error
// names the field that is missing or not a string ("vmId: missing").
Result<boost::json::object> parse_azure_compute(std::string_view body);

class Inventory {
 public:
  // The GPUs' part: driver and CUDA versions, each GPU's model and memory; an empty object
  // before the first sample or without NVIDIA's driver (then `gpu` is left out).
  using GpuPart = std::function<boost::json::object()>;

  // `config` is read at each use (the running configuration's section: a reload applies
  // at the next inventory).
  Inventory(Api& api, const InventoryConfig& config, GpuPart gpus, std::filesystem::path root = "/");

  // The whole inventory, as of now. Never fails: what is unknown is left out.
  boost::asio::awaitable<boost::json::object> get();

 private:
  boost::asio::awaitable<void> ask_metadata();

  Api& api_;
  const InventoryConfig& config_;
  GpuPart gpus_;
  std::filesystem::path root_;
  Logger log_;
  std::optional<std::string> asked_;  // the endpoint `cloud_` is for
  boost::json::object cloud_;        // its answer; empty: none (yet)
  bool asking_ = false;
  Clock::steady_time retry_at_{};    // a failed ask is repeated from then on
  Duration retry_after_{};
};

// The compute document at `endpoint`, as `cloud` (parse_azure_compute); an error says why
// there is none. Bounded by `timeout`.
boost::asio::awaitable<Result<boost::json::object>> fetch_cloud(const std::string& endpoint, Duration timeout);

}  // namespace instanced::inventory
