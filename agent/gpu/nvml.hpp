// NVML, loaded at run time. The agent declares the subset of NVML's C interface it uses
// itself (as nvtop does): no NVIDIA headers at build time, an opaque device handle,
// versioned symbols tried first, optional symbols that old drivers lack allowed to be
// missing. Most VMs have no GPU: no library, no device and a failing nvmlInit are normal
// states, reported, never a crash.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace instanced::gpu {

// NVML's return codes that the agent tells apart (nvml.h, nvmlReturn_t).
namespace nvml {
constexpr int kSuccess = 0;
constexpr int kUninitialized = 1;
constexpr int kNotSupported = 3;
constexpr int kNoPermission = 4;
constexpr int kNotFound = 6;
constexpr int kDriverNotLoaded = 9;
constexpr int kTimeout = 10;
constexpr int kLibraryNotFound = 12;
constexpr int kFunctionNotFound = 13;
constexpr int kGpuIsLost = 15;
constexpr int kResetRequired = 16;
constexpr int kLibRmVersionMismatch = 18;
constexpr int kUnknown = 999;

// Clock event (throttle) reasons, nvmlClocksEventReason* bits.
constexpr std::uint64_t kReasonGpuIdle = 0x1;
constexpr std::uint64_t kReasonSwPowerCap = 0x4;
constexpr std::uint64_t kReasonHwSlowdown = 0x8;
constexpr std::uint64_t kReasonSwThermalSlowdown = 0x20;
constexpr std::uint64_t kReasonHwThermalSlowdown = 0x40;
constexpr std::uint64_t kReasonHwPowerBrakeSlowdown = 0x80;
}  // namespace nvml

struct GpuSample {
  unsigned index = 0;
  std::string uuid;
  std::string name;
  std::string pci_bus_id;  // as NVML writes it: "00000000:3B:00.0"
  int error = 0;           // a device-level NVML error (GPU_IS_LOST), 0 when sampled
  std::string error_text;
  std::optional<std::uint64_t> memory_total, memory_used;
  std::optional<unsigned> util_gpu, util_memory;
  std::optional<unsigned> temperature, temp_slowdown, temp_shutdown;
  std::optional<double> power_w, power_limit_w;
  std::optional<std::uint64_t> clock_event_reasons;
  std::optional<bool> ecc_enabled;
  std::optional<std::uint64_t> ecc_corrected_volatile, ecc_uncorrected_volatile;
  std::optional<std::uint64_t> ecc_corrected_aggregate, ecc_uncorrected_aggregate;
  std::optional<unsigned> retired_sbe, retired_dbe;
  std::optional<bool> retired_pending;
  std::optional<unsigned> remapped_corrected, remapped_uncorrected;
  std::optional<bool> remap_pending, remap_failure;
  std::optional<unsigned> pcie_replays;
  std::optional<bool> persistence;
};

struct SystemSample {
  bool library = false;     // libnvidia-ml.so.1 was found
  std::string load_error;   // dlopen's message when not
  int init = nvml::kSuccess;  // nvmlInit's result
  std::string init_error;     // its text
  std::string driver_version;
  std::string nvml_version;
  std::optional<int> cuda_driver_version;  // 12020 for CUDA 12.2
  std::vector<GpuSample> gpus;
  std::vector<std::string> missing_symbols;  // optional symbols this driver lacks
};

struct XidEvent {
  std::string pci_bus_id;  // as the source wrote it
  int xid = 0;
  std::string source;      // "nvml" or "kmsg"
  std::string text;        // the kernel's line (kmsg), escaped
};

// The seam: the product wires NvmlLibrary; tests load a fake libnvidia-ml.so.1 through
// the same library search (LD_LIBRARY_PATH).
class GpuSource {
 public:
  virtual ~GpuSource() = default;
  // Blocking, and may hang in the driver: call it through a SingleFlight.
  virtual SystemSample sample() = 0;
  // Blocks up to `timeout_ms` for XID events (NVML's event set). Empty when none, or
  // when events are not available (no library, no GPU).
  virtual std::vector<XidEvent> wait_xids(unsigned timeout_ms) = 0;
};

class NvmlLibrary final : public GpuSource {
 public:
  explicit NvmlLibrary(std::string soname = "libnvidia-ml.so.1");
  ~NvmlLibrary() override;
  NvmlLibrary(const NvmlLibrary&) = delete;
  NvmlLibrary& operator=(const NvmlLibrary&) = delete;

  SystemSample sample() override;
  std::vector<XidEvent> wait_xids(unsigned timeout_ms) override;

  struct Api;

 private:
  bool ensure_loaded(SystemSample& out);
  std::string soname_;
  void* handle_ = nullptr;
  // Shared with the calls in flight: a call blocked in the driver may return after this
  // object is gone (the agent stopping) and must still find the table.
  std::shared_ptr<Api> api_;
  bool initialised_ = false;
  std::vector<std::string> missing_;  // optional symbols the library lacks
  void* events_ = nullptr;  // nvmlEventSet_t
  bool events_tried_ = false;
};

// "NVML_ERROR_LIB_RM_VERSION_MISMATCH"-style names of the codes above (others: "error N").
std::string error_name(int code);

}  // namespace instanced::gpu
