// A fake libnvidia-ml.so.1 for the tests: it exports the NVML C functions the agent uses,
// with NVML's signatures and return codes, and answers from a scenario file (JSON) named
// by FAKE_NVML_SCENARIO. The file is read again whenever it changes, so a test can change
// a GPU's state while the agent runs. Built twice: the full library, and (FAKE_NVML_OLD)
// one that lacks the newer entry points, as an old driver's does.
//
// Scenario: {"init": 0, "driver": "550.54.15", "nvml": "12.550.54.15", "cuda": 12040,
//   "hang": "nvmlDeviceGetPowerUsage", "gpus": [{"uuid", "name", "pci", "memory_total",
//   "memory_used", "util", "mem_util", "temp", "slowdown", "shutdown", "power_mw",
//   "limit_mw", "reasons", "ecc", "ecc_cv", "ecc_uv", "ecc_ca", "ecc_ua", "retired_sbe",
//   "retired_dbe", "retired_pending", "remap": [corr, unc, pending, failure], "replays",
//   "persistence", "lost"}], "xids": [{"gpu": 0, "xid": 79}]}
// Every XID in "xids" is delivered once by nvmlEventSetWait.
// Boost.JSON compiled in (src.hpp): the fake is a shared object of its own.
#include <boost/json.hpp>
#include <boost/json/src.hpp>
#include <chrono>
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <sys/stat.h>
#include <thread>

namespace json = boost::json;

namespace {

std::mutex g_mutex;
json::object g_scenario;
std::time_t g_mtime = 0;
long g_mtime_ns = -1;
std::set<std::size_t> g_delivered;  // xids already given out

struct Dev {
  unsigned index;
};
Dev g_devices[64];

void reload_locked() {
  const char* path = std::getenv("FAKE_NVML_SCENARIO");
  if (!path) return;
  struct stat st{};
  if (::stat(path, &st) != 0) return;
  if (st.st_mtim.tv_sec == g_mtime && st.st_mtim.tv_nsec == g_mtime_ns) return;
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  boost::system::error_code ec;
  auto v = json::parse(ss.str(), ec);
  if (ec || !v.is_object()) return;  // a half-written file: keep the last one
  g_scenario = v.as_object();
  g_mtime = st.st_mtim.tv_sec;
  g_mtime_ns = st.st_mtim.tv_nsec;
}

json::object scenario() {
  std::lock_guard lock(g_mutex);
  reload_locked();
  return g_scenario;
}

// Blocks while the scenario says that `fn` hangs (the test rewrites the file to end it).
void maybe_hang(const char* fn) {
  for (;;) {
    auto s = scenario();
    auto* h = s.if_contains("hang");
    if (!h || !h->is_string() || h->as_string() != fn) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

long long num(const json::object& o, const char* key, long long dflt = 0) {
  auto* v = o.if_contains(key);
  if (!v) return dflt;
  if (v->is_bool()) return v->as_bool() ? 1 : 0;
  return v->to_number<long long>();
}

std::string str(const json::object& o, const char* key, const char* dflt = "") {
  auto* v = o.if_contains(key);
  return v && v->is_string() ? std::string(v->as_string()) : dflt;
}

// The GPU behind a handle, or nullptr; *code is NVML_ERROR_GPU_IS_LOST for a lost one.
const json::object* gpu(void* handle, json::object& keep, int* code) {
  keep = scenario();
  auto* list = keep.if_contains("gpus");
  if (!handle || !list) {
    *code = 2;  // NVML_ERROR_INVALID_ARGUMENT
    return nullptr;
  }
  unsigned i = static_cast<Dev*>(handle)->index;
  if (i >= list->as_array().size()) {
    *code = 2;
    return nullptr;
  }
  const auto& g = list->as_array()[i].as_object();
  if (num(g, "lost")) {
    *code = 15;  // NVML_ERROR_GPU_IS_LOST
    return nullptr;
  }
  *code = 0;
  return &g;
}

int copy(const std::string& s, char* out, unsigned len) {
  if (s.size() + 1 > len) return 7;  // NVML_ERROR_INSUFFICIENT_SIZE
  std::memcpy(out, s.c_str(), s.size() + 1);
  return 0;
}

struct PciInfo {
  char bus_id_legacy[16];
  unsigned domain, bus, device, pci_device_id, pci_subsystem_id;
  char bus_id[32];
};
struct Memory {
  unsigned long long total, free, used;
};
struct Utilization {
  unsigned gpu, memory;
};
struct EventData {
  void* device;
  unsigned long long event_type, event_data;
  unsigned gpu_instance_id, compute_instance_id;
};

#define GPU_OR_RETURN()                 \
  json::object keep_;                   \
  int code_ = 0;                        \
  const json::object* g = gpu(d, keep_, &code_); \
  if (!g) return code_

}  // namespace

extern "C" {

int nvmlInit_v2() {
  auto s = scenario();
  return static_cast<int>(num(s, "init", 0));
}
int nvmlInit() { return nvmlInit_v2(); }
int nvmlShutdown() { return 0; }

const char* nvmlErrorString(int r) {
  switch (r) {
    case 0: return "Success";
    case 9: return "Driver Not Loaded";
    case 15: return "GPU is lost";
    case 18: return "RM has detected an NVML/RM version mismatch.";
    default: return "Unknown Error";
  }
}

int nvmlSystemGetDriverVersion(char* out, unsigned len) { return copy(str(scenario(), "driver", "550.54.15"), out, len); }
int nvmlSystemGetNVMLVersion(char* out, unsigned len) { return copy(str(scenario(), "nvml", "12.550.54.15"), out, len); }
#ifndef FAKE_NVML_OLD
int nvmlSystemGetCudaDriverVersion_v2(int* v) {
  *v = static_cast<int>(num(scenario(), "cuda", 12040));
  return 0;
}
#endif
int nvmlSystemGetCudaDriverVersion(int* v) {
  *v = static_cast<int>(num(scenario(), "cuda", 12040));
  return 0;
}

int nvmlDeviceGetCount_v2(unsigned* n) {
  auto s = scenario();
  auto* list = s.if_contains("gpus");
  *n = list ? static_cast<unsigned>(list->as_array().size()) : 0;
  return 0;
}
int nvmlDeviceGetHandleByIndex_v2(unsigned i, void** handle) {
  if (i >= 64) return 2;
  g_devices[i].index = i;
  *handle = &g_devices[i];
  return 0;
}
int nvmlDeviceGetUUID(void* d, char* out, unsigned len) {
  GPU_OR_RETURN();
  return copy(str(*g, "uuid"), out, len);
}
int nvmlDeviceGetName(void* d, char* out, unsigned len) {
  GPU_OR_RETURN();
  return copy(str(*g, "name", "NVIDIA H100 80GB HBM3"), out, len);
}
static int pci_info(void* d, PciInfo* p, bool legacy_only) {
  GPU_OR_RETURN();
  std::string id = str(*g, "pci");
  // busIdLegacy has a 4-digit domain: "0000:1B:00.0".
  std::string legacy = id.size() == 16 ? id.substr(4) : id;
  if (legacy_only) {  // nvmlPciInfo_v2 ends before busId: only the legacy field is written
    std::memset(p, 0, offsetof(PciInfo, bus_id));
    std::strncpy(p->bus_id_legacy, legacy.c_str(), sizeof p->bus_id_legacy - 1);
    return 0;
  }
  std::memset(p, 0, sizeof *p);
  std::strncpy(p->bus_id_legacy, legacy.c_str(), sizeof p->bus_id_legacy - 1);
  std::strncpy(p->bus_id, id.c_str(), sizeof p->bus_id - 1);
  return 0;
}
#ifndef FAKE_NVML_OLD
int nvmlDeviceGetPciInfo_v3(void* d, PciInfo* p) { return pci_info(d, p, false); }
#endif
int nvmlDeviceGetPciInfo_v2(void* d, PciInfo* p) { return pci_info(d, p, true); }
int nvmlDeviceGetMemoryInfo(void* d, Memory* m) {
  GPU_OR_RETURN();
  m->total = static_cast<unsigned long long>(num(*g, "memory_total", 85899345920LL));
  m->used = static_cast<unsigned long long>(num(*g, "memory_used", 0));
  m->free = m->total - m->used;
  return 0;
}
int nvmlDeviceGetUtilizationRates(void* d, Utilization* u) {
  GPU_OR_RETURN();
  u->gpu = static_cast<unsigned>(num(*g, "util"));
  u->memory = static_cast<unsigned>(num(*g, "mem_util"));
  return 0;
}
int nvmlDeviceGetTemperature(void* d, int sensor, unsigned* t) {
  GPU_OR_RETURN();
  if (sensor != 0) return 2;
  *t = static_cast<unsigned>(num(*g, "temp", 35));
  return 0;
}
int nvmlDeviceGetTemperatureThreshold(void* d, int which, unsigned* t) {
  GPU_OR_RETURN();
  *t = static_cast<unsigned>(which == 0 ? num(*g, "shutdown", 92) : num(*g, "slowdown", 87));
  return 0;
}
int nvmlDeviceGetPowerUsage(void* d, unsigned* mw) {
  maybe_hang("nvmlDeviceGetPowerUsage");
  GPU_OR_RETURN();
  *mw = static_cast<unsigned>(num(*g, "power_mw", 70000));
  return 0;
}
int nvmlDeviceGetEnforcedPowerLimit(void* d, unsigned* mw) {
  GPU_OR_RETURN();
  *mw = static_cast<unsigned>(num(*g, "limit_mw", 700000));
  return 0;
}
#ifndef FAKE_NVML_OLD
int nvmlDeviceGetCurrentClocksEventReasons(void* d, unsigned long long* r) {
  GPU_OR_RETURN();
  *r = static_cast<unsigned long long>(num(*g, "reasons"));
  return 0;
}
#endif
int nvmlDeviceGetCurrentClocksThrottleReasons(void* d, unsigned long long* r) {
  GPU_OR_RETURN();
  *r = static_cast<unsigned long long>(num(*g, "reasons"));
  return 0;
}
int nvmlDeviceGetEccMode(void* d, int* current, int* pending) {
  GPU_OR_RETURN();
  *current = *pending = static_cast<int>(num(*g, "ecc", 1));
  return 0;
}
int nvmlDeviceGetTotalEccErrors(void* d, int type, int counter, unsigned long long* n) {
  GPU_OR_RETURN();
  const char* key = type == 0 ? (counter == 0 ? "ecc_cv" : "ecc_ca") : (counter == 0 ? "ecc_uv" : "ecc_ua");
  *n = static_cast<unsigned long long>(num(*g, key));
  return 0;
}
int nvmlDeviceGetRetiredPages(void* d, int cause, unsigned* count, unsigned long long* addresses) {
  GPU_OR_RETURN();
  unsigned n = static_cast<unsigned>(num(*g, cause == 0 ? "retired_sbe" : "retired_dbe"));
  if (*count < n) {  // as NVML: the count needed, and INSUFFICIENT_SIZE
    *count = n;
    return 7;
  }
  if (addresses)
    for (unsigned i = 0; i < n; ++i) addresses[i] = 0x1000ULL * (i + 1);
  *count = n;
  return 0;
}
int nvmlDeviceGetRetiredPagesPendingStatus(void* d, int* pending) {
  GPU_OR_RETURN();
  *pending = static_cast<int>(num(*g, "retired_pending"));
  return 0;
}
#ifndef FAKE_NVML_OLD
int nvmlDeviceGetRemappedRows(void* d, unsigned* corr, unsigned* unc, unsigned* pending, unsigned* failure) {
  GPU_OR_RETURN();
  auto* r = g->if_contains("remap");
  unsigned v[4] = {0, 0, 0, 0};
  if (r && r->is_array())
    for (std::size_t i = 0; i < 4 && i < r->as_array().size(); ++i) v[i] = static_cast<unsigned>(r->as_array()[i].to_number<long long>());
  *corr = v[0];
  *unc = v[1];
  *pending = v[2];
  *failure = v[3];
  return 0;
}
#endif
int nvmlDeviceGetPcieReplayCounter(void* d, unsigned* n) {
  GPU_OR_RETURN();
  *n = static_cast<unsigned>(num(*g, "replays"));
  return 0;
}
int nvmlDeviceGetPersistenceMode(void* d, int* mode) {
  GPU_OR_RETURN();
  *mode = static_cast<int>(num(*g, "persistence", 1));
  return 0;
}

int nvmlEventSetCreate(void** set) {
  static int token;
  *set = &token;
  return 0;
}
int nvmlDeviceRegisterEvents(void*, unsigned long long, void*) { return 0; }
int nvmlEventSetFree(void*) { return 0; }
int nvmlEventSetWait_v2(void*, EventData* data, unsigned timeout_ms) {
  auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto s = scenario();
    if (auto* xids = s.if_contains("xids"); xids && xids->is_array()) {
      std::lock_guard lock(g_mutex);
      const auto& a = xids->as_array();
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (g_delivered.count(i)) continue;
        g_delivered.insert(i);
        const auto& x = a[i].as_object();
        unsigned gi = static_cast<unsigned>(num(x, "gpu"));
        g_devices[gi].index = gi;
        data->device = &g_devices[gi];
        data->event_type = 0x8;  // nvmlEventTypeXidCriticalError
        data->event_data = static_cast<unsigned long long>(num(x, "xid"));
        data->gpu_instance_id = data->compute_instance_id = 0xFFFFFFFF;
        return 0;
      }
    }
    if (std::chrono::steady_clock::now() >= until) return 10;  // NVML_ERROR_TIMEOUT
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
}

}  // extern "C"
