#include "agent/gpu/nvml.hpp"

#include <cstring>
#include <dlfcn.h>
#include <fmt/format.h>
#include <mutex>
#include <type_traits>

#include "common/text.hpp"

namespace instanced::gpu {
namespace {

// NVML's types, as laid out in nvml.h. Only what the agent reads.
using Device = struct NvmlDeviceOpaque*;
using EventSet = struct NvmlEventSetOpaque*;
struct Memory {
  unsigned long long total, free, used;
};
struct Utilization {
  unsigned int gpu, memory;
};
struct PciInfo {  // nvmlPciInfo_t (v3 layout; v2 has the same prefix)
  char bus_id_legacy[16];
  unsigned int domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
};
struct EventData {
  Device device;
  unsigned long long event_type;
  unsigned long long event_data;
  unsigned int gpu_instance_id;
  unsigned int compute_instance_id;
};
constexpr unsigned long long kEventXidCriticalError = 0x8;
constexpr int kTemperatureGpu = 0;
constexpr int kThresholdShutdown = 0, kThresholdSlowdown = 1;
constexpr int kEccCorrected = 0, kEccUncorrected = 1;
constexpr int kVolatile = 0, kAggregate = 1;
constexpr int kRetiredSbe = 0, kRetiredDbe = 1;

std::mutex g_mutex;  // loading, initialising, the event set

}  // namespace

// The function table. A null entry: the driver lacks that (optional) symbol.
struct NvmlLibrary::Api {
  int (*init)() = nullptr;
  const char* (*error_string)(int) = nullptr;
  int (*system_driver_version)(char*, unsigned) = nullptr;
  int (*system_nvml_version)(char*, unsigned) = nullptr;
  int (*system_cuda_version)(int*) = nullptr;
  int (*device_count)(unsigned*) = nullptr;
  int (*device_by_index)(unsigned, Device*) = nullptr;
  int (*device_uuid)(Device, char*, unsigned) = nullptr;
  int (*device_name)(Device, char*, unsigned) = nullptr;
  int (*device_pci)(Device, PciInfo*) = nullptr;
  int (*device_memory)(Device, Memory*) = nullptr;
  int (*device_utilization)(Device, Utilization*) = nullptr;
  int (*device_temperature)(Device, int, unsigned*) = nullptr;
  int (*device_temperature_threshold)(Device, int, unsigned*) = nullptr;
  int (*device_power)(Device, unsigned*) = nullptr;
  int (*device_power_limit)(Device, unsigned*) = nullptr;
  int (*device_clock_reasons)(Device, unsigned long long*) = nullptr;
  int (*device_ecc_mode)(Device, int*, int*) = nullptr;
  int (*device_ecc_total)(Device, int, int, unsigned long long*) = nullptr;
  int (*device_retired_pages)(Device, int, unsigned*, unsigned long long*) = nullptr;
  int (*device_retired_pending)(Device, int*) = nullptr;
  int (*device_remapped_rows)(Device, unsigned*, unsigned*, unsigned*, unsigned*) = nullptr;
  int (*device_pcie_replays)(Device, unsigned*) = nullptr;
  int (*device_persistence)(Device, int*) = nullptr;
  int (*event_set_create)(EventSet*) = nullptr;
  int (*register_events)(Device, unsigned long long, EventSet) = nullptr;
  int (*event_set_wait)(EventSet, EventData*, unsigned) = nullptr;
};

std::string error_name(int code) {
  switch (code) {
    case nvml::kSuccess: return "NVML_SUCCESS";
    case nvml::kUninitialized: return "NVML_ERROR_UNINITIALIZED";
    case nvml::kNotSupported: return "NVML_ERROR_NOT_SUPPORTED";
    case nvml::kNoPermission: return "NVML_ERROR_NO_PERMISSION";
    case nvml::kNotFound: return "NVML_ERROR_NOT_FOUND";
    case nvml::kDriverNotLoaded: return "NVML_ERROR_DRIVER_NOT_LOADED";
    case nvml::kTimeout: return "NVML_ERROR_TIMEOUT";
    case nvml::kLibraryNotFound: return "NVML_ERROR_LIBRARY_NOT_FOUND";
    case nvml::kFunctionNotFound: return "NVML_ERROR_FUNCTION_NOT_FOUND";
    case nvml::kGpuIsLost: return "NVML_ERROR_GPU_IS_LOST";
    case nvml::kResetRequired: return "NVML_ERROR_RESET_REQUIRED";
    case nvml::kLibRmVersionMismatch: return "NVML_ERROR_LIB_RM_VERSION_MISMATCH";
    case nvml::kUnknown: return "NVML_ERROR_UNKNOWN";
    default: return fmt::format("NVML error {}", code);
  }
}

NvmlLibrary::NvmlLibrary(std::string soname) : soname_(std::move(soname)) {}

// Not unloaded (no dlclose): a thread may still be blocked inside the library.
NvmlLibrary::~NvmlLibrary() = default;

bool NvmlLibrary::ensure_loaded(SystemSample& out) {
  std::lock_guard lock(g_mutex);
  if (!handle_) {
    dlerror();
    handle_ = ::dlopen(soname_.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (!handle_) {
      const char* e = dlerror();
      out.load_error = e ? e : "not found";
      return false;
    }
    api_ = std::make_shared<Api>();
    // The first name that exists: versioned symbols first (the _v2 entry points fixed
    // bugs of the originals), then the old names for old drivers.
    auto sym = [this, &out](auto& slot, std::initializer_list<const char*> names, bool optional) {
      for (const char* n : names)
        if (void* p = ::dlsym(handle_, n)) {
          slot = reinterpret_cast<std::remove_reference_t<decltype(slot)>>(p);
          return;
        }
      if (optional) out.missing_symbols.emplace_back(*names.begin());
    };
    Api& a = *api_;
    sym(a.init, {"nvmlInit_v2", "nvmlInit"}, false);
    sym(a.error_string, {"nvmlErrorString"}, false);
    sym(a.system_driver_version, {"nvmlSystemGetDriverVersion"}, false);
    sym(a.system_nvml_version, {"nvmlSystemGetNVMLVersion"}, true);
    sym(a.system_cuda_version, {"nvmlSystemGetCudaDriverVersion_v2", "nvmlSystemGetCudaDriverVersion"}, true);
    sym(a.device_count, {"nvmlDeviceGetCount_v2", "nvmlDeviceGetCount"}, false);
    sym(a.device_by_index, {"nvmlDeviceGetHandleByIndex_v2", "nvmlDeviceGetHandleByIndex"}, false);
    sym(a.device_uuid, {"nvmlDeviceGetUUID"}, true);
    sym(a.device_name, {"nvmlDeviceGetName"}, true);
    sym(a.device_pci, {"nvmlDeviceGetPciInfo_v3", "nvmlDeviceGetPciInfo_v2", "nvmlDeviceGetPciInfo"}, true);
    sym(a.device_memory, {"nvmlDeviceGetMemoryInfo"}, true);
    sym(a.device_utilization, {"nvmlDeviceGetUtilizationRates"}, true);
    sym(a.device_temperature, {"nvmlDeviceGetTemperature"}, true);
    sym(a.device_temperature_threshold, {"nvmlDeviceGetTemperatureThreshold"}, true);
    sym(a.device_power, {"nvmlDeviceGetPowerUsage"}, true);
    sym(a.device_power_limit, {"nvmlDeviceGetEnforcedPowerLimit"}, true);
    sym(a.device_clock_reasons, {"nvmlDeviceGetCurrentClocksEventReasons", "nvmlDeviceGetCurrentClocksThrottleReasons"}, true);
    sym(a.device_ecc_mode, {"nvmlDeviceGetEccMode"}, true);
    sym(a.device_ecc_total, {"nvmlDeviceGetTotalEccErrors"}, true);
    sym(a.device_retired_pages, {"nvmlDeviceGetRetiredPages"}, true);
    sym(a.device_retired_pending, {"nvmlDeviceGetRetiredPagesPendingStatus"}, true);
    sym(a.device_remapped_rows, {"nvmlDeviceGetRemappedRows"}, true);
    sym(a.device_pcie_replays, {"nvmlDeviceGetPcieReplayCounter"}, true);
    sym(a.device_persistence, {"nvmlDeviceGetPersistenceMode"}, true);
    sym(a.event_set_create, {"nvmlEventSetCreate"}, true);
    sym(a.register_events, {"nvmlDeviceRegisterEvents"}, true);
    sym(a.event_set_wait, {"nvmlEventSetWait_v2", "nvmlEventSetWait"}, true);
    if (!a.init || !a.error_string || !a.device_count || !a.device_by_index || !a.system_driver_version) {
      out.load_error = fmt::format("{} lacks nvmlInit, nvmlDeviceGetCount or nvmlDeviceGetHandleByIndex", soname_);
      ::dlclose(handle_);
      handle_ = nullptr;
      api_.reset();
      return false;
    }
    missing_.assign(out.missing_symbols.begin(), out.missing_symbols.end());
  }
  out.missing_symbols = missing_;
  if (!initialised_) {
    int r = api_->init();
    if (r != nvml::kSuccess) {
      out.init = r;
      const char* text = api_->error_string(r);
      out.init_error = text ? escape_for_log(text) : error_name(r);
      return false;
    }
    initialised_ = true;
  }
  return true;
}

SystemSample NvmlLibrary::sample() {
  SystemSample out;
  std::shared_ptr<Api> api;
  {
    bool ok = ensure_loaded(out);
    std::lock_guard lock(g_mutex);
    out.library = handle_ != nullptr;
    if (!ok) return out;
    api = api_;
  }
  const Api& a = *api;
  char buf[96];
  if (a.system_driver_version(buf, sizeof buf) == nvml::kSuccess) out.driver_version = escape_for_log(buf);
  if (a.system_nvml_version && a.system_nvml_version(buf, sizeof buf) == nvml::kSuccess) out.nvml_version = escape_for_log(buf);
  int cuda = 0;
  if (a.system_cuda_version && a.system_cuda_version(&cuda) == nvml::kSuccess) out.cuda_driver_version = cuda;
  unsigned count = 0;
  if (int r = a.device_count(&count); r != nvml::kSuccess) {
    out.init = r;
    out.init_error = escape_for_log(a.error_string(r) ? a.error_string(r) : "");
    return out;
  }
  for (unsigned i = 0; i < count; ++i) {
    GpuSample g;
    g.index = i;
    Device d = nullptr;
    if (int r = a.device_by_index(i, &d); r != nvml::kSuccess) {
      g.error = r;
      g.error_text = error_name(r);
      out.gpus.push_back(std::move(g));
      continue;
    }
    auto ok = [&g](int r) {
      if (r == nvml::kGpuIsLost || r == nvml::kResetRequired) {
        g.error = r;
        g.error_text = error_name(r);
      }
      return r == nvml::kSuccess;
    };
    if (a.device_uuid && ok(a.device_uuid(d, buf, sizeof buf))) g.uuid = escape_for_log(buf);
    if (a.device_name && ok(a.device_name(d, buf, sizeof buf))) g.name = escape_for_log(buf);
    PciInfo pci{};
    if (a.device_pci && ok(a.device_pci(d, &pci))) {
      // The older PciInfo versions end before busId: their busIdLegacy holds the address.
      std::string id(pci.bus_id, strnlen(pci.bus_id, sizeof pci.bus_id));
      if (id.empty()) id.assign(pci.bus_id_legacy, strnlen(pci.bus_id_legacy, sizeof pci.bus_id_legacy));
      g.pci_bus_id = escape_for_log(id);
    }
    Memory mem{};
    if (a.device_memory && ok(a.device_memory(d, &mem))) {
      g.memory_total = mem.total;
      g.memory_used = mem.used;
    }
    Utilization util{};
    if (a.device_utilization && ok(a.device_utilization(d, &util))) {
      g.util_gpu = util.gpu;
      g.util_memory = util.memory;
    }
    unsigned u = 0;
    if (a.device_temperature && ok(a.device_temperature(d, kTemperatureGpu, &u))) g.temperature = u;
    if (a.device_temperature_threshold && ok(a.device_temperature_threshold(d, kThresholdSlowdown, &u))) g.temp_slowdown = u;
    if (a.device_temperature_threshold && ok(a.device_temperature_threshold(d, kThresholdShutdown, &u))) g.temp_shutdown = u;
    if (a.device_power && ok(a.device_power(d, &u))) g.power_w = u / 1000.0;
    if (a.device_power_limit && ok(a.device_power_limit(d, &u))) g.power_limit_w = u / 1000.0;
    unsigned long long reasons = 0;
    if (a.device_clock_reasons && ok(a.device_clock_reasons(d, &reasons))) g.clock_event_reasons = reasons;
    int current = 0, pending = 0;
    if (a.device_ecc_mode && ok(a.device_ecc_mode(d, &current, &pending))) g.ecc_enabled = current != 0;
    if (a.device_ecc_total && g.ecc_enabled.value_or(false)) {
      unsigned long long n = 0;
      if (ok(a.device_ecc_total(d, kEccCorrected, kVolatile, &n))) g.ecc_corrected_volatile = n;
      if (ok(a.device_ecc_total(d, kEccUncorrected, kVolatile, &n))) g.ecc_uncorrected_volatile = n;
      if (ok(a.device_ecc_total(d, kEccCorrected, kAggregate, &n))) g.ecc_corrected_aggregate = n;
      if (ok(a.device_ecc_total(d, kEccUncorrected, kAggregate, &n))) g.ecc_uncorrected_aggregate = n;
    }
    if (a.device_retired_pages) {
      // A zero-sized query sets the count, and answers INSUFFICIENT_SIZE when it is above 0.
      constexpr int kInsufficientSize = 7;
      for (auto [cause, slot] : {std::pair{kRetiredSbe, &g.retired_sbe}, std::pair{kRetiredDbe, &g.retired_dbe}}) {
        unsigned n = 0;
        int r = a.device_retired_pages(d, cause, &n, nullptr);
        if (ok(r) || r == kInsufficientSize) *slot = n;
      }
    }
    int pend = 0;
    if (a.device_retired_pending && ok(a.device_retired_pending(d, &pend))) g.retired_pending = pend != 0;
    unsigned corr = 0, unc = 0, is_pending = 0, failure = 0;
    if (a.device_remapped_rows && ok(a.device_remapped_rows(d, &corr, &unc, &is_pending, &failure))) {
      g.remapped_corrected = corr;
      g.remapped_uncorrected = unc;
      g.remap_pending = is_pending != 0;
      g.remap_failure = failure != 0;
    }
    if (a.device_pcie_replays && ok(a.device_pcie_replays(d, &u))) g.pcie_replays = u;
    int mode = 0;
    if (a.device_persistence && ok(a.device_persistence(d, &mode))) g.persistence = mode != 0;
    out.gpus.push_back(std::move(g));
  }
  return out;
}

std::vector<XidEvent> NvmlLibrary::wait_xids(unsigned timeout_ms) {
  std::vector<XidEvent> out;
  EventSet set = nullptr;
  std::shared_ptr<Api> api;
  {
    std::lock_guard lock(g_mutex);
    if (!initialised_ || !api_ || !api_->event_set_create || !api_->register_events || !api_->event_set_wait) return out;
    api = api_;
    if (!events_tried_) {
      events_tried_ = true;
      EventSet s = nullptr;
      if (api_->event_set_create(&s) == nvml::kSuccess) {
        unsigned count = 0;
        api_->device_count(&count);
        bool any = false;
        for (unsigned i = 0; i < count; ++i) {
          Device d = nullptr;
          if (api_->device_by_index(i, &d) == nvml::kSuccess &&
              api_->register_events(d, kEventXidCriticalError, s) == nvml::kSuccess)
            any = true;
        }
        if (any) events_ = s;
      }
    }
    set = static_cast<EventSet>(events_);
  }
  if (!set) return out;
  EventData data{};
  if (api->event_set_wait(set, &data, timeout_ms) != nvml::kSuccess) return out;
  if (!(data.event_type & kEventXidCriticalError)) return out;
  XidEvent e;
  e.xid = static_cast<int>(data.event_data);
  e.source = "nvml";
  PciInfo pci{};
  if (api->device_pci && api->device_pci(data.device, &pci) == nvml::kSuccess)
    e.pci_bus_id = std::string(pci.bus_id, strnlen(pci.bus_id, sizeof pci.bus_id));
  out.push_back(std::move(e));
  return out;
}

}  // namespace instanced::gpu
