#include "agent/gpu/gpu.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include "common/fs.hpp"
#include "common/message_ids.hpp"
#include "common/wake.hpp"

namespace instanced::gpu {
namespace asio = boost::asio;
namespace json = boost::json;
using namespace std::chrono_literals;

namespace {

constexpr std::size_t kMaxXids = 100;
// An NVML event and its kernel log line are one XID: the log is read once per sample, so
// the window spans a sampling interval and an NVML call's timeout, and 10 s more.
constexpr auto kDuplicateSlack = 10s;

// NVML's clock event (throttle) reason bits, as label values of one 0/1 series each.
constexpr std::pair<std::uint64_t, const char*> kClockEventReasons[] = {
    {0x1, "gpu_idle"},
    {0x2, "applications_clocks_setting"},
    {0x4, "sw_power_cap"},
    {0x8, "hw_slowdown"},
    {0x10, "sync_boost"},
    {0x20, "sw_thermal_slowdown"},
    {0x40, "hw_thermal_slowdown"},
    {0x80, "hw_power_brake_slowdown"},
    {0x100, "display_clock_setting"},
};

Labels with(Labels labels, const Labels& extra) {
  labels.insert(labels.end(), extra.begin(), extra.end());
  return labels;
}

template <class T>
void put(json::object& o, std::string_view key, const std::optional<T>& v) {
  if (v) o[key] = *v;
}

json::object gpu_json(const GpuSample& g) {
  json::object o;
  o["index"] = g.index;
  o["uuid"] = g.uuid;
  o["name"] = g.name;
  o["pci_bus_id"] = g.pci_bus_id;
  if (g.error) o["error"] = g.error_text;
  json::object mem;
  put(mem, "total_bytes", g.memory_total);
  put(mem, "used_bytes", g.memory_used);
  o["memory"] = std::move(mem);
  json::object util;
  put(util, "gpu_percent", g.util_gpu);
  put(util, "memory_percent", g.util_memory);
  o["utilization"] = std::move(util);
  json::object temp;
  put(temp, "celsius", g.temperature);
  put(temp, "slowdown_celsius", g.temp_slowdown);
  put(temp, "shutdown_celsius", g.temp_shutdown);
  o["temperature"] = std::move(temp);
  json::object power;
  put(power, "watts", g.power_w);
  put(power, "limit_watts", g.power_limit_w);
  o["power"] = std::move(power);
  if (g.clock_event_reasons) {
    json::array reasons;
    const std::pair<std::uint64_t, const char*> names[] = {
        {nvml::kReasonGpuIdle, "idle"},
        {nvml::kReasonSwPowerCap, "sw_power_cap"},
        {nvml::kReasonHwSlowdown, "hw_slowdown"},
        {nvml::kReasonSwThermalSlowdown, "sw_thermal_slowdown"},
        {nvml::kReasonHwThermalSlowdown, "hw_thermal_slowdown"},
        {nvml::kReasonHwPowerBrakeSlowdown, "hw_power_brake_slowdown"}};
    for (const auto& [bit, name] : names)
      if (*g.clock_event_reasons & bit) reasons.emplace_back(name);
    o["clock_event_reasons"] = std::move(reasons);
  }
  json::object ecc;
  put(ecc, "enabled", g.ecc_enabled);
  put(ecc, "corrected_volatile", g.ecc_corrected_volatile);
  put(ecc, "uncorrected_volatile", g.ecc_uncorrected_volatile);
  put(ecc, "corrected_aggregate", g.ecc_corrected_aggregate);
  put(ecc, "uncorrected_aggregate", g.ecc_uncorrected_aggregate);
  o["ecc"] = std::move(ecc);
  json::object retired;
  put(retired, "single_bit", g.retired_sbe);
  put(retired, "double_bit", g.retired_dbe);
  put(retired, "pending", g.retired_pending);
  o["retired_pages"] = std::move(retired);
  json::object rows;
  put(rows, "correctable", g.remapped_corrected);
  put(rows, "uncorrectable", g.remapped_uncorrected);
  put(rows, "pending", g.remap_pending);
  put(rows, "failure", g.remap_failure);
  o["remapped_rows"] = std::move(rows);
  put(o, "pcie_replays", g.pcie_replays);
  put(o, "persistence_mode", g.persistence);
  return o;
}

}  // namespace

// The kernel log reader: new records since the last read. /dev/kmsg gives one record per
// read() and EAGAIN at the end (opened non-blocking, it never waits); a plain file gives its
// new bytes. Owned jointly with the worker thread, so a read still running when the agent
// stops finds it.
struct Gpu::Kmsg {
  explicit Kmsg(std::string p) : path(std::move(p)) {}
  std::vector<XidEvent> read() {
    std::vector<XidEvent> found;
    if (!fd) {
      fd = Fd(::open(path.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC));
      if (!fd) return found;
    }
    char buf[8192];
    for (int records = 0; records < 10000; ++records) {
      ssize_t n = ::read(fd.get(), buf, sizeof buf);
      if (n < 0 && errno == EPIPE) continue;  // overwritten records: go on with the next
      if (n <= 0) break;
      partial.append(buf, static_cast<std::size_t>(n));
      std::size_t pos = 0;
      for (auto nl = partial.find('\n'); nl != std::string::npos; nl = partial.find('\n', pos)) {
        if (auto e = parse_kmsg_xid(std::string_view(partial).substr(pos, nl - pos))) found.push_back(std::move(*e));
        pos = nl + 1;
      }
      partial.erase(0, pos);
      if (partial.size() > 64 * 1024) partial.clear();  // not a text log
    }
    return found;
  }
  std::string path;
  Fd fd;
  std::string partial;
};

Gpu::Gpu(asio::any_io_executor ex, Api& api, GpuSource& source, const GpuConfig& config)
    : ex_(ex),
      api_(api),
      source_(source),
      config_(config),
      log_(api.logging.get("gpu")),
      calls_(ex),
      events_(ex),
      kmsg_calls_(ex),
      sampled_(ex),
      kmsg_(std::make_shared<Kmsg>(config.kmsg)) {}

Gpu::~Gpu() = default;

void Gpu::reconfigure(const GpuConfig& config) {
  const std::string kmsg = config_.kmsg;
  config_ = config;
  if (config_.kmsg != kmsg) log_->warn("gpu.kmsg changed: the kernel log path is read at start; restart the agent to apply it");
  config_.kmsg = kmsg;
}

std::vector<unsigned> Gpu::usable_gpus() const {
  std::vector<unsigned> out;
  if (state_ != "sampled") return out;
  for (const auto& t : gpus_)
    if (t.assessment.health == GpuHealth::healthy || t.assessment.health == GpuHealth::degraded)
      out.push_back(t.sample.index);
  return out;
}

std::optional<double> Gpu::busiest_utilization() const {
  std::optional<double> out;
  for (const auto& t : gpus_)
    if (t.sample.util_gpu && (!out || *t.sample.util_gpu > *out)) out = *t.sample.util_gpu;
  return out;
}

void Gpu::record_xid(XidEvent e) {
  const auto now = api_.clock.wall_now();
  for (const auto& s : xids_)
    if (s.event.xid == e.xid && same_pci_device(s.event.pci_bus_id, e.pci_bus_id) &&
        now - s.at < config_.interval + config_.call_timeout + kDuplicateSlack && s.event.source != e.source)
      return;
  std::optional<unsigned> gpu;
  for (auto& t : gpus_)
    if (same_pci_device(t.sample.pci_bus_id, e.pci_bus_id)) {
      gpu = t.sample.index;
      t.xids.push_back(e.xid);
      if (t.xids.size() > 32) t.xids.erase(t.xids.begin());  // an application that floods XID 13
    }
  auto info = classify_xid(e.xid);
  std::string where = gpu ? fmt::format("GPU {}", *gpu) : fmt::format("PCI {}", e.pci_bus_id);
  std::string msg = fmt::format("XID {} on {}: {}", e.xid, where, info.meaning);
  const std::string gpu_field = gpu ? std::to_string(*gpu) : e.pci_bus_id;
  {
    LogFields fields{{"MESSAGE_ID", msgid::kGpuXid}, {"INSTANCED_GPU", gpu_field}};
    if (info.cls == XidClass::fatal)
      log_->error("{}", msg);
    else
      log_->warn("{}", msg);
  }
  json::object data{{"xid", e.xid}, {"pci_bus_id", e.pci_bus_id}, {"source", e.source}};
  if (gpu) data["gpu"] = *gpu;
  if (!e.text.empty()) data["line"] = e.text;
  api_.state.emit("gpu", "xid", msg, std::move(data));
  api_.state.metrics().add_counter("instanced_gpu_xid_errors_total", "XID errors seen, by GPU (empty: a PCI device NVML does not list) and XID",
                                   {{"gpu", gpu ? std::to_string(*gpu) : ""}, {"xid", std::to_string(e.xid)}});
  xids_.push_back({std::move(e), now, gpu});
  while (xids_.size() > kMaxXids) xids_.pop_front();
}

// Rates every GPU again (after a sample or a new XID) and reports each change of health.
void Gpu::reassess() {
  for (auto& t : gpus_) {
    t.assessment = assess(t.sample, t.before ? &*t.before : nullptr, t.xids, Thresholds{});
    if (t.assessment.health != t.told) {
      std::string msg = fmt::format("GPU {} ({}): {} -> {}{}{}", t.sample.index, t.sample.uuid, to_string(t.told),
                                    to_string(t.assessment.health), t.assessment.reasons.empty() ? "" : ": ",
                                    fmt::join(t.assessment.reasons, "; "));
      const std::string gpu_field = std::to_string(t.sample.index);
      {
        LogFields fields{{"MESSAGE_ID", msgid::kGpuStateChanged}, {"INSTANCED_GPU", gpu_field}};
        if (t.assessment.health == GpuHealth::healthy)
          log_->info("{}", msg);
        else
          log_->warn("{}", msg);
      }
      api_.state.emit("gpu", "gpu_state_changed", msg,
                      {{"gpu", t.sample.index},
                       {"uuid", t.sample.uuid},
                       {"from", std::string(to_string(t.told))},
                       {"to", std::string(to_string(t.assessment.health))}});
      t.told = t.assessment.health;
    }
  }
}

asio::awaitable<void> Gpu::sample_once() {
  GpuSource* source = &source_;
  auto sweep = [source] { return source->sample(); };
  const std::string what = "NVML sample";
  auto r = co_await calls_.run(what, config_.call_timeout, sweep);
  // The kernel log, off the loop (a read of /dev/kmsg does not block; a file may be slow).
  if (!config_.kmsg.empty()) {
    auto read = [kmsg = kmsg_] { return kmsg->read(); };
    const std::string reading = "reading " + config_.kmsg;
    auto lines = co_await kmsg_calls_.run(reading, config_.call_timeout, read);
    if (lines)
      for (auto& e : *lines) pending_xids_.push_back(std::move(e));
  }
  if (!r) {
    state_ = "stuck";
    state_detail_ = r.error().message + " (the NVIDIA driver is not answering)";
  } else {
    system_ = std::move(*r);
    if (!system_.library) {
      state_ = "absent";
      state_detail_ = system_.load_error;
      if (!told_absent_) log_->info("no NVIDIA management library ({}): no GPU monitoring", state_detail_);
      told_absent_ = true;
    } else if (system_.init != nvml::kSuccess) {
      state_ = "unavailable";
      if (system_.init == nvml::kLibRmVersionMismatch)
        state_detail_ = "driver/library version mismatch: the NVIDIA driver was upgraded without a reboot; reboot the VM";
      else if (system_.init == nvml::kDriverNotLoaded)
        state_detail_ = "the NVIDIA kernel driver is not loaded (no GPU on this VM, or the driver failed to load)";
      else
        state_detail_ = fmt::format("{}: {}", error_name(system_.init), system_.init_error);
    } else {
      state_ = system_.gpus.empty() ? "no_gpus" : "sampled";
      if (state_ == "sampled") sampled_.pulse();  // the event loop waits for this
      state_detail_.clear();
      std::vector<Tracked> next;
      for (auto& g : system_.gpus) {
        Tracked t;
        for (auto& old : gpus_)
          if (old.sample.index == g.index && old.sample.uuid == g.uuid) {
            t.before = std::move(old.sample);
            t.told = old.told;
            t.xids = std::move(old.xids);
          }
        t.sample = g;
        next.push_back(std::move(t));
      }
      gpus_ = std::move(next);
    }
  }
  for (auto& e : pending_xids_) record_xid(std::move(e));
  pending_xids_.clear();
  reassess();
  if (state_ == "sampled" && api_.clock.now() >= inventory_due_) {
    auto roots = config_.cuda_roots;
    auto includes = config_.include_dirs;
    auto cuda = system_.cuda_driver_version;
    auto scan = [roots, includes, cuda] { return scan_cuda(roots, includes, cuda); };
    const std::string scanning = "CUDA inventory";
    auto inv = co_await api_.pool.run(scanning, config_.call_timeout, scan);
    if (inv) {
      for (const auto& w : inv->warnings)
        if (!cuda_ || std::find(cuda_->warnings.begin(), cuda_->warnings.end(), w) == cuda_->warnings.end())
          log_->warn("{}", w);
      cuda_ = std::move(*inv);
    }
    inventory_due_ = api_.clock.now() + config_.inventory_interval;
  }
  publish();
}

asio::awaitable<void> Gpu::events_loop() {
  GpuSource* source = &source_;
  auto wait = [source] { return source->wait_xids(1000); };
  const std::string what = "NVML event wait";
  for (;;) {
    if (state_ != "sampled") {
      // No GPUs to wait on (no driver, none present, NVML failing): sleep until a sample
      // finds some; a VM without GPUs does not wake for this at all.
      co_await sampled_.wait();
      continue;
    }
    const auto started = std::chrono::steady_clock::now();
    auto r = co_await events_.run(what, config_.call_timeout + 1s, wait);
    // An empty answer well before the 1 s wait ended: events are not available (no device
    // registered, a lost GPU). Waiting again at once would spin; the next sample decides.
    const bool early = std::chrono::steady_clock::now() - started < 500ms;
    if (!r || (r->empty() && early)) {
      co_await api_.clock.sleep_for(config_.interval);
      continue;
    }
    if (r->empty()) continue;
    for (auto& e : *r) record_xid(std::move(e));
    reassess();
    publish();
  }
}

asio::awaitable<void> Gpu::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  if (!config_.enabled) {
    state_ = "disabled";
    publish();
    co_return;
  }
  publish();
  asio::co_spawn(ex_, events_loop(), asio::bind_cancellation_slot(stop_events_.slot(), [](std::exception_ptr) {}));
  try {
    for (;;) {
      co_await sample_once();
      // No NVIDIA library (a VM without GPUs, the common case): looked for again with the
      // CUDA inventory, not every interval (each look is a dlopen through the loader's path).
      co_await api_.clock.sleep_for(state_ == "absent" ? std::max(config_.interval, config_.inventory_interval)
                                                        : config_.interval);
    }
  } catch (...) {
    stop_events_.emit(asio::cancellation_type::terminal);
    throw;
  }
}

json::object Gpu::inventory_json() const {
  if (!system_.library || system_.init != nvml::kSuccess) return {};
  json::object o;
  if (!system_.driver_version.empty()) o["driver_version"] = system_.driver_version;
  if (system_.cuda_driver_version) o["cuda_version"] = cuda_version_text(*system_.cuda_driver_version);
  json::array gpus;
  for (const auto& g : system_.gpus) {
    json::object one{{"name", g.name}};
    if (g.memory_total) one["memory_bytes"] = *g.memory_total;
    gpus.push_back(std::move(one));
  }
  o["gpus"] = std::move(gpus);
  return o;
}

json::object Gpu::status_json() const {
  json::object o;
  o["state"] = state_;
  if (!state_detail_.empty()) o["detail"] = state_detail_;
  json::object sys;
  sys["library"] = config_.library;
  if (!system_.driver_version.empty()) sys["driver_version"] = system_.driver_version;
  if (!system_.nvml_version.empty()) sys["nvml_version"] = system_.nvml_version;
  if (system_.cuda_driver_version) sys["cuda_driver_version"] = cuda_version_text(*system_.cuda_driver_version);
  if (!system_.missing_symbols.empty()) {
    json::array m;
    for (const auto& s : system_.missing_symbols) m.emplace_back(s);
    sys["missing_symbols"] = std::move(m);
  }
  o["system"] = std::move(sys);
  json::array list;
  for (const auto& t : gpus_) {
    json::object g = gpu_json(t.sample);
    g["health"] = std::string(to_string(t.assessment.health));
    json::array reasons;
    for (const auto& r : t.assessment.reasons) reasons.emplace_back(r);
    g["reasons"] = std::move(reasons);
    json::array xids;
    for (int x : t.xids) xids.emplace_back(x);
    g["xids"] = std::move(xids);
    list.push_back(std::move(g));
  }
  o["gpus"] = std::move(list);
  json::array xids;
  for (const auto& s : xids_) {
    json::object x{{"xid", s.event.xid}, {"pci_bus_id", s.event.pci_bus_id}, {"source", s.event.source},
                   {"time", iso8601(s.at)}, {"meaning", std::string(classify_xid(s.event.xid).meaning)}};
    if (s.gpu) x["gpu"] = *s.gpu;
    xids.push_back(std::move(x));
  }
  o["xids"] = std::move(xids);
  if (cuda_) {
    json::object c;
    json::array tk;
    for (const auto& t : cuda_->toolkits) tk.push_back(json::object{{"path", t.path}, {"version", t.version}});
    c["toolkits"] = std::move(tk);
    for (const auto& [key, list] : {std::pair{"cudnn", &cuda_->cudnn}, std::pair{"nccl", &cuda_->nccl}}) {
      json::array a;
      for (const auto& [file, version] : *list) a.push_back(json::object{{"file", file}, {"version", version}});
      c[key] = std::move(a);
    }
    json::array w;
    for (const auto& s : cuda_->warnings) w.emplace_back(s);
    c["warnings"] = std::move(w);
    o["cuda"] = std::move(c);
  }
  return o;
}

void Gpu::publish() {
  Health h = Health::ok;
  std::string summary;
  if (state_ == "starting") {
    // Not `starting`: the agent's health does not wait for a GPU sweep (a stuck driver would
    // hold it for call_timeout); nothing waits for the first sample.
    summary = "first sample pending";
  } else if (state_ == "disabled") {
    summary = "disabled (gpu.enabled: false)";
  } else if (state_ == "absent") {
    summary = "no NVIDIA library: no GPU";
  } else if (state_ == "unavailable") {
    // A CPU VM with the driver packages installed is normal; a mismatch needs a reboot.
    h = system_.init == nvml::kDriverNotLoaded ? Health::ok : Health::degraded;
    summary = "unavailable: " + state_detail_;
  } else if (state_ == "stuck") {
    h = Health::degraded;
    summary = state_detail_;
  } else if (state_ == "no_gpus") {
    summary = "NVML loaded, no GPU";
  } else {
    std::size_t healthy = 0;
    std::vector<std::string> bad;
    for (const auto& t : gpus_) {
      if (t.assessment.health == GpuHealth::healthy) {
        ++healthy;
        continue;
      }
      bad.push_back(fmt::format("GPU {} {}", t.sample.index, to_string(t.assessment.health)));
      h = std::max(h, t.assessment.health == GpuHealth::degraded ? Health::degraded : Health::failed);
    }
    summary = fmt::format("{} of {} GPUs healthy", healthy, gpus_.size());
    if (!bad.empty()) summary += fmt::format(" ({})", fmt::join(bad, ", "));
    if (cuda_ && !cuda_->warnings.empty()) {
      h = std::max(h, Health::degraded);
      summary += "; " + cuda_->warnings.front();
    }
  }
  for (const auto& s : xids_)
    if (!s.gpu && classify_xid(s.event.xid).cls == XidClass::fatal) {
      h = Health::failed;
      summary += fmt::format("; XID {} on PCI {}", s.event.xid, s.event.pci_bus_id);
    }
  auto& m = api_.state.metrics();
  for (const auto& t : gpus_) {
    const GpuSample& g = t.sample;
    Labels l{{"gpu", std::to_string(g.index)}, {"uuid", g.uuid}};
    auto gauge = [&](const char* name, const char* help, const auto& v, double scale = 1.0, Labels extra = {}) {
      if (!v) return;
      m.set_gauge(name, help, with(l, extra), static_cast<double>(*v) * scale);
    };
    m.set_gauge("instanced_gpu_healthy", "1 while the GPU is healthy or degraded, 0 when unhealthy or unavailable", l,
                t.assessment.health == GpuHealth::healthy || t.assessment.health == GpuHealth::degraded ? 1 : 0);
    gauge("instanced_gpu_temperature_celsius", "GPU temperature", g.temperature);
    gauge("instanced_gpu_utilization_ratio", "GPU utilisation (0-1)", g.util_gpu, 0.01);
    gauge("instanced_gpu_memory_used_bytes", "GPU memory in use", g.memory_used);
    gauge("instanced_gpu_memory_total_bytes", "GPU memory size", g.memory_total);
    gauge("instanced_gpu_power_watts", "Power draw", g.power_w);
    gauge("instanced_gpu_power_limit_watts", "Enforced power limit", g.power_limit_w);
    if (g.clock_event_reasons)
      for (const auto& [bit, reason] : kClockEventReasons)
        m.set_gauge("instanced_gpu_clock_event_reason", "1 while NVML gives this reason for lowered clocks", with(l, {{"reason", reason}}),
                    (*g.clock_event_reasons & bit) != 0 ? 1 : 0);
    // NVML keeps these totals; volatile ones start again at a driver reload, as a counter may.
    auto counter = [&](const char* name, const char* help, const auto& v, Labels extra) {
      if (v) m.set_counter(name, help, with(l, extra), static_cast<double>(*v));
    };
    const char* ecc = "ECC errors counted by the driver (volatile: since the driver loaded; aggregate: the GPU's life)";
    counter("instanced_gpu_ecc_errors_total", ecc, g.ecc_corrected_volatile, {{"type", "corrected"}, {"counter", "volatile"}});
    counter("instanced_gpu_ecc_errors_total", ecc, g.ecc_uncorrected_volatile, {{"type", "uncorrected"}, {"counter", "volatile"}});
    counter("instanced_gpu_ecc_errors_total", ecc, g.ecc_corrected_aggregate, {{"type", "corrected"}, {"counter", "aggregate"}});
    counter("instanced_gpu_ecc_errors_total", ecc, g.ecc_uncorrected_aggregate, {{"type", "uncorrected"}, {"counter", "aggregate"}});
    gauge("instanced_gpu_retired_pages", "Retired memory pages", g.retired_sbe, 1.0, {{"cause", "single_bit"}});
    gauge("instanced_gpu_retired_pages", "Retired memory pages", g.retired_dbe, 1.0, {{"cause", "double_bit"}});
    gauge("instanced_gpu_retired_pages_pending", "1 while a page retirement waits for a reset", g.retired_pending);
    gauge("instanced_gpu_remapped_rows", "Remapped memory rows", g.remapped_corrected, 1.0, {{"kind", "correctable"}});
    gauge("instanced_gpu_remapped_rows", "Remapped memory rows", g.remapped_uncorrected, 1.0, {{"kind", "uncorrectable"}});
    gauge("instanced_gpu_row_remap_pending", "1 while a row remapping waits for a reset", g.remap_pending);
    gauge("instanced_gpu_row_remap_failure", "1 after a row remapping failed", g.remap_failure);
    counter("instanced_gpu_pcie_replays_total", "PCIe replays counted by the driver", g.pcie_replays, {});
  }
  // The heartbeat's GPU summary: only where NVML answers (a CPU VM sends nothing).
  std::string brief;
  if (state_ == "sampled") {
    std::vector<std::string> unhealthy, degraded;
    for (const auto& t : gpus_) {
      if (t.assessment.health == GpuHealth::degraded) degraded.push_back(std::to_string(t.sample.index));
      if (t.assessment.health == GpuHealth::unhealthy || t.assessment.health == GpuHealth::unavailable)
        unhealthy.push_back(std::to_string(t.sample.index));
    }
    brief = fmt::format(R"({{"count":{},"unhealthy":[{}],"degraded":[{}]}})", gpus_.size(), fmt::join(unhealthy, ","),
                        fmt::join(degraded, ","));
  } else if (state_ == "unavailable" || state_ == "stuck") {
    brief = fmt::format(R"({{"state":"{}"}})", state_);
  }
  api_.state.set_heartbeat_summary("gpu", brief);
  api_.state.publish("gpu", h, summary, status_json());
}

void Gpu::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/gpu", [this](const status::Request&) {
    return status::json_response(status::http::status::ok, json::serialize(status_json()));
  });
}

}  // namespace instanced::gpu
