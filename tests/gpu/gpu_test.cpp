// GPU health: the XID catalogue and kernel-log parser, the health rules and the CUDA
// inventory as functions; then the real agent loading a fake libnvidia-ml.so.1 (built in
// tests/gpu/fake_nvml.cpp) through the dynamic loader's search path, driven by scenario
// files: no GPU, one H100, eight GPUs, an XID 79, uncorrectable ECC, pending remapped
// rows, a version mismatch at init, an old driver without the newer symbols, a call that
// hangs.
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <fmt/format.h>
#include <set>
#include <thread>

#include "agent/gpu/cuda.hpp"
#include "agent/gpu/health.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/nvml_scenario.hpp"

using namespace instanced;
using namespace instanced::gpu;
using namespace instanced::testing;
namespace json = boost::json;

namespace {

// Kernel log records as NVIDIA's driver writes them (formats from public bug reports).
const char* kRecords[] = {
    "4,1234,5678901234,-;NVRM: Xid (PCI:0000:3b:00): 79, pid='<unknown>', name=<unknown>, GPU has fallen off the bus.",
    "NVRM: Xid (PCI:0000:00:1e): 31, pid=2143, name=python, Ch 00000008, intr 10000000. MMU Fault",
    "[ 1234.567890] NVRM: Xid (0000:03:00): 13, Graphics Exception: ESR 0x404600=0x80000002",
    "4,99,1,-;NVRM: Xid (PCI:0001:c1:00): 48, pid=901, name=train.py, An uncorrectable double bit error (DBE) has been detected",
};

}  // namespace

TEST_CASE("XID lines from the kernel log are parsed, noise and partial lines are not", "[gpu][xid]") {
  auto e = parse_kmsg_xid(kRecords[0]);
  REQUIRE(e);
  CHECK(e->xid == 79);
  CHECK(e->pci_bus_id == "0000:3b:00");
  CHECK(e->source == "kmsg");
  CHECK_THAT(e->text, Catch::StartsWith("NVRM: Xid (PCI:0000:3b:00): 79"));
  e = parse_kmsg_xid(kRecords[1]);
  REQUIRE(e);
  CHECK(e->xid == 31);
  e = parse_kmsg_xid(kRecords[2]);
  REQUIRE(e);
  CHECK(e->xid == 13);
  CHECK(e->pci_bus_id == "0000:03:00");
  e = parse_kmsg_xid(kRecords[3]);
  REQUIRE(e);
  CHECK(e->xid == 48);
  for (const char* noise : {"6,1,2,-;usb 1-1: new high-speed USB device", "NVRM: loading NVIDIA UNIX x86_64 Kernel Module",
                            "NVRM: Xid (PCI:0000:3b:00): ", "NVRM: Xid (PCI:0000:3b", "NVRM: Xid (nonsense): 79, x",
                            "NVRM: Xid (PCI:0000:3b:00): -5, x", "", "NVRM: Xid (PCI:0000:3b:00): 79"}) {
    INFO(noise);
    auto r = parse_kmsg_xid(noise);
    if (std::string_view(noise) == "NVRM: Xid (PCI:0000:3b:00): 79")
      CHECK(r);  // complete enough: the number is there
    else
      CHECK_FALSE(r);
  }
}

TEST_CASE("PCI addresses of NVML and the kernel name the same device", "[gpu][xid]") {
  CHECK(same_pci_device("00000000:3B:00.0", "0000:3b:00"));
  CHECK(same_pci_device("PCI:0001:c1:00.0", "00000001:C1:00.0"));
  CHECK_FALSE(same_pci_device("00000000:3B:00.0", "0000:3c:00"));
  CHECK_FALSE(same_pci_device("", "0000:3c:00"));
}

TEST_CASE("the XID table: fatal, warning, unknown", "[gpu][xid]") {
  for (int fatal : {48, 64, 74, 79, 92, 94, 95, 119, 120}) CHECK(classify_xid(fatal).cls == XidClass::fatal);
  CHECK(classify_xid(13).cls == XidClass::warning);
  CHECK(classify_xid(45).cls == XidClass::info);
  CHECK(classify_xid(9999).cls == XidClass::warning);
}

TEST_CASE("health rules: ECC, remapping, retirement, throttling, XIDs", "[gpu][health]") {
  GpuSample g;
  g.ecc_corrected_volatile = 10;
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::healthy);
  GpuSample before = g;
  g.ecc_corrected_volatile = 12;
  auto a = assess(g, &before, {}, {});
  CHECK(a.health == GpuHealth::degraded);
  CHECK_THAT(a.reasons.at(0), Catch::Contains("corrected ECC errors rising (10 -> 12)"));
  g = {};
  g.remap_pending = true;
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::degraded);
  g.remap_failure = true;
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::unhealthy);
  g = {};
  g.ecc_uncorrected_volatile = 1;
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::unhealthy);
  g = {};
  g.clock_event_reasons = nvml::kReasonHwPowerBrakeSlowdown | nvml::kReasonGpuIdle;
  CHECK(assess(g, nullptr, {}, {}).reasons == std::vector<std::string>{"clocks lowered: power brake"});
  g.clock_event_reasons = nvml::kReasonSwPowerCap;  // a power cap is normal under load
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::healthy);
  g = {};
  CHECK(assess(g, nullptr, {13}, {}).health == GpuHealth::degraded);
  CHECK(assess(g, nullptr, {13, 79}, {}).health == GpuHealth::unhealthy);
  g.error = nvml::kGpuIsLost;
  CHECK(assess(g, nullptr, {}, {}).health == GpuHealth::unavailable);
}

TEST_CASE("CUDA inventory: toolkits, cuDNN, NCCL, and a toolkit newer than the driver", "[gpu][cuda]") {
  TempDir dir;
  dir.write("cuda/cuda-12.4/version.json", R"({"cuda" : {"name" : "CUDA SDK", "version" : "12.4.131"}})");
  dir.write("cuda/cuda-11.8/version.json", R"({"cuda": {"version": "11.8.89"}})");
  dir.write("cuda/cuda-10.2/version.txt", "CUDA Version 10.2.89\n");
  std::filesystem::create_directory_symlink(dir / "cuda/cuda-12.4", dir / "cuda/cuda");
  dir.write("include/cudnn_version.h", "#define CUDNN_MAJOR 9\n#define CUDNN_MINOR 1\n#define CUDNN_PATCHLEVEL 0\n");
  dir.write("include/nccl.h", "#define NCCL_MAJOR 2\n#define NCCL_MINOR 21\n#define NCCL_PATCH 5\n");
  auto inv = scan_cuda({(dir / "cuda").string()}, {(dir / "include").string()}, 12020);
  REQUIRE(inv.toolkits.size() == 3);  // the cuda symlink is not counted twice
  CHECK(inv.toolkits[0].version == "10.2.89");
  CHECK(inv.toolkits[2].version == "12.4.131");
  REQUIRE(inv.cudnn.size() == 1);
  CHECK(inv.cudnn[0].second == "9.1.0");
  REQUIRE(inv.nccl.size() == 1);
  CHECK(inv.nccl[0].second == "2.21.5");
  REQUIRE(inv.warnings.size() == 1);
  CHECK_THAT(inv.warnings[0], Catch::Contains("CUDA 12.4.131") && Catch::Contains("supports CUDA 12.2"));
  CHECK(scan_cuda({(dir / "none").string()}, {}, std::nullopt).toolkits.empty());
}

// ---- the agent with the fake NVML -----------------------------------------------------

namespace {

const std::string kConfig = R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
disk:
  paths: []
gpu:
  interval: 200ms
  call_timeout: 1s
  kmsg: {dir}/kmsg
  cuda_roots: [{dir}/cuda]
  include_dirs: [{dir}/include]
)";

class GpuAgent {
 public:
  GpuAgent(const TempDir& dir, const std::string& scenario, const char* fake_dir = FAKE_NVML_DIR,
           const std::string& extra_config = "")
      : agent_(dir, kConfig + extra_config) {
    write_scenario(dir, scenario);
    dir.write("kmsg", "");
    REQUIRE(agent_.start_and_wait_ready(10s, {{"LD_LIBRARY_PATH", fake_dir},
                                              {"FAKE_NVML_SCENARIO", (dir / "scenario.json").string()}}));
  }
  json::value gpu() const {
    auto r = agent_.curl("http://localhost/v1/gpu");
    REQUIRE(r.exit_code == 0);
    return json::parse(r.output);
  }
  // Polls /v1/gpu until `pred` holds.
  json::value wait(const std::function<bool(const json::value&)>& pred, std::chrono::milliseconds timeout = 10s) const {
    auto until = std::chrono::steady_clock::now() + timeout;
    json::value v;
    while (std::chrono::steady_clock::now() < until) {
      v = gpu();
      if (pred(v)) return v;
      std::this_thread::sleep_for(50ms);
    }
    FAIL("not reached: " << json::serialize(v) << "\n" << agent_.log());
    return v;
  }
  AgentProcess& agent() { return agent_; }

 private:
  AgentProcess agent_;
};

// The agent `gpu-test` connected to the development control plane on `port`.
std::string with_control(int port, const std::string& more = "") {
  return fmt::format("instance:\n  name: gpu-test\ncontrol:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n  insecure: true\n"
                     "  token_file: {{dir}}/token\n  initial_delay_max: 0s\n",
                     port) +
         more;
}

bool state_is(const json::value& v, const char* s) { return v.at("state") == s; }
std::string health_of(const json::value& v, std::size_t i) { return std::string(v.at("gpus").at(i).at("health").as_string()); }

}  // namespace

TEST_CASE("no NVIDIA library: absent, and one info line", "[gpu][agent]") {
  TempDir dir;
  AgentProcess agent(dir, kConfig);
  dir.write("kmsg", "");
  REQUIRE(agent.start_and_wait_ready(10s, {{"LD_LIBRARY_PATH", ""}}));
  std::this_thread::sleep_for(1s);  // five sampling intervals
  auto v = json::parse(agent.curl("http://localhost/v1/gpu").output);
  CHECK(v.at("state") == "absent");
  std::string log = agent.log();
  std::size_t lines = 0;
  for (std::size_t p = log.find(" gpu: "); p != std::string::npos; p = log.find(" gpu: ", p + 1)) ++lines;
  CHECK(lines == 1);
  CHECK_THAT(log, Catch::Contains("info  gpu: no NVIDIA management library"));
  auto status = json::parse(agent.curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("gpu").at("state") == "ok");
}

TEST_CASE("one healthy H100: every field, instancectl gpu, metrics", "[gpu][agent]") {
  TempDir dir;
  dir.write("cuda/cuda-12.4/version.json", R"({"cuda": {"version": "12.4.131"}})");
  dir.write("include/nccl.h", "#define NCCL_MAJOR 2\n#define NCCL_MINOR 21\n#define NCCL_PATCH 5\n");
  GpuAgent a(dir, with_gpus(1));
  auto v = a.wait([](const json::value& v) { return state_is(v, "sampled") && v.as_object().contains("cuda"); });
  CHECK(v.at("system").at("driver_version") == "550.54.15");
  CHECK(v.at("system").at("cuda_driver_version") == "12.4");
  const auto& g = v.at("gpus").at(0);
  CHECK(g.at("health") == "healthy");
  CHECK(g.at("name") == "NVIDIA H100 80GB HBM3");
  CHECK(g.at("pci_bus_id") == "00000000:1B:00.0");
  CHECK(g.at("memory").at("total_bytes") == 85520809984LL);
  CHECK(g.at("utilization").at("gpu_percent") == 37);
  CHECK(g.at("temperature").at("slowdown_celsius") == 87);
  CHECK(g.at("power").at("watts").to_number<double>() == Approx(123.456));
  CHECK(g.at("ecc").at("corrected_aggregate") == 3);
  CHECK(g.at("remapped_rows").at("failure") == false);
  CHECK(g.at("pcie_replays") == 2);
  CHECK(g.at("clock_event_reasons").at(0) == "idle");
  CHECK(v.at("cuda").at("toolkits").at(0).at("version") == "12.4.131");
  CHECK(v.at("cuda").at("nccl").at(0).at("version") == "2.21.5");
  CHECK(v.at("cuda").at("warnings").as_array().empty());
  auto table = run_command(fmt::format("{} --socket {} gpu", instancectl_binary(), a.agent().socket().string()));
  CHECK(table.exit_code == 0);
  CHECK_THAT(table.output, Catch::Contains("NVIDIA H100 80GB HBM3     ok") && Catch::Contains("driver 550.54.15"));
  auto metrics = a.agent().curl("http://localhost/metrics").output;
  CHECK_THAT(metrics, Catch::Contains("instanced_gpu_temperature_celsius{gpu=\"0\",uuid=\"GPU-4a3b2c1d-0000-4000-8000-000000000000\"} 41"));
  CHECK_THAT(metrics, Catch::Contains("instanced_gpu_healthy{gpu=\"0\""));
  // Counters NVML keeps are counters; the throttle bit mask is one 0/1 series per reason.
  const std::string uuid = "uuid=\"GPU-4a3b2c1d-0000-4000-8000-000000000000\"";
  CHECK_THAT(metrics, Catch::Contains("instanced_gpu_pcie_replays_total{gpu=\"0\"," + uuid + "} 2\n"));
  CHECK_THAT(metrics, Catch::Contains("# TYPE instanced_gpu_ecc_errors_total counter\n"));
  CHECK_THAT(metrics, Catch::Contains("instanced_gpu_clock_event_reason{gpu=\"0\"," + uuid + ",reason=\"gpu_idle\"} 1\n") &&
                          Catch::Contains("instanced_gpu_clock_event_reason{gpu=\"0\"," + uuid + ",reason=\"sw_power_cap\"} 0\n"));
  dir.write("metrics.txt", metrics);
  auto check = run_command("promtool check metrics < " + (dir / "metrics.txt").string() + " 2>&1");
  INFO(check.output);
  CHECK(check.exit_code == 0);
  CHECK(check.output.empty());
}

TEST_CASE("eight GPUs, each with its own identity", "[gpu][agent]") {
  TempDir dir;
  GpuAgent a(dir, with_gpus(8));
  auto v = a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  REQUIRE(v.at("gpus").as_array().size() == 8);
  std::set<std::string> uuids;
  for (const auto& g : v.at("gpus").as_array()) {
    uuids.insert(std::string(g.at("uuid").as_string()));
    CHECK(g.at("health") == "healthy");
  }
  CHECK(uuids.size() == 8);
  auto status = json::parse(a.agent().curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("gpu").at("summary") == "8 of 8 GPUs healthy");
}

TEST_CASE("an XID 79 from NVML events makes that GPU unhealthy, with an event and in the heartbeat", "[gpu][agent]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  GpuAgent a(dir, with_gpus(2), FAKE_NVML_DIR, with_control(cp.agent_port, "  heartbeat_interval: 200ms\n"));
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  write_scenario(dir, with_gpus(2, R"("xids": [{"gpu": 1, "xid": 79}], )"));
  auto v = a.wait([](const json::value& v) { return health_of(v, 1) == "unhealthy"; });
  CHECK(health_of(v, 0) == "healthy");
  CHECK_THAT(std::string(v.at("gpus").at(1).at("reasons").at(0).as_string()), Catch::Contains("XID 79: GPU has fallen off the bus"));
  CHECK(v.at("xids").at(0).at("source") == "nvml");
  CHECK(v.at("xids").at(0).at("gpu") == 1);
  auto status = json::parse(a.agent().curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("gpu").at("state") == "failed");
  CHECK_THAT(json::serialize(status.at("events")), Catch::Contains("XID 79 on GPU 1"));
  // A failed subsystem: instancectl's exit status 2, not degraded's 1.
  const std::string ctl = instancectl_binary() + " --socket " + a.agent().socket().string();
  CHECK(run_command(ctl + " health").exit_code == 2);
  CHECK(run_command(ctl + " status").exit_code == 2);
  // The control plane sees it in the heartbeat's GPU summary.
  REQUIRE(cp.wait([](const json::value& v) {
    auto* i = v.as_object().if_contains("gpu-test");
    if (!i) return false;
    auto* g = i->at("heartbeat").as_object().if_contains("gpu");
    return g && g->at("unhealthy").as_array().size() == 1;
  }));
  auto hb = cp.instances().at("gpu-test").at("heartbeat").at("gpu");
  CHECK(hb.at("count") == 2);
  CHECK(hb.at("unhealthy").at(0) == 1);
}

// The GPUs' part of the inventory (docs/protocol.md, "Inventory"), asked with get_inventory.
TEST_CASE("the inventory names the driver, CUDA and each GPU's model and memory", "[gpu][agent][inventory]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  GpuAgent a(dir, with_gpus(2), FAKE_NVML_DIR, with_control(cp.agent_port, "inventory:\n  metadata_endpoint: ''\n"));
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("gpu-test"); }));
  cp.command("gpu-test", R"({"id":"inv-1","name":"get_inventory"})");
  REQUIRE(cp.wait([](const json::value& v) { return v.at("gpu-test").at("results").as_object().contains("inv-1"); }));
  auto inventory = cp.instances().at("gpu-test").at("results").at("inv-1").at("result").at("inventory");
  INFO(json::serialize(inventory));
  CHECK(inventory.at("gpu") == json::parse(R"({"driver_version":"550.54.15","cuda_version":"12.4","gpus":[
    {"name":"NVIDIA H100 80GB HBM3","memory_bytes":85520809984},{"name":"NVIDIA H100 80GB HBM3","memory_bytes":85520809984}]})"));
  CHECK_FALSE(inventory.as_object().contains("cloud"));  // not asked: the endpoint is empty
  CHECK_THAT(a.agent().log(), !Catch::Contains("metadata service"));
}

TEST_CASE("an XID in the kernel log is mapped to its GPU by PCI address, once", "[gpu][agent]") {
  TempDir dir;
  GpuAgent a(dir, with_gpus(2));
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  // GPU 1 is at 00000000:3B:00.0; noise and a partial line around the record.
  dir.write("kmsg", std::string("6,10,100,-;usb 1-1: new device\n") + kRecords[0] + "\n4,11,101,-;NVRM: Xid (PCI:0000:3b");
  auto v = a.wait([](const json::value& v) { return health_of(v, 1) == "unhealthy"; });
  REQUIRE(v.at("xids").as_array().size() == 1);
  CHECK(v.at("xids").at(0).at("source") == "kmsg");
  CHECK(v.at("xids").at(0).at("gpu") == 1);
  // A counter per GPU and XID (not the last XID's number as a value).
  auto metrics = a.agent().curl("http://localhost/metrics").output;
  CHECK_THAT(metrics, Catch::Contains("# TYPE instanced_gpu_xid_errors_total counter\n") &&
                          Catch::Contains("instanced_gpu_xid_errors_total{gpu=\"1\",xid=\"79\"} 1\n"));
}

TEST_CASE("uncorrectable ECC is unhealthy, pending remapped rows degraded", "[gpu][agent]") {
  TempDir dir;
  std::string s = with_gpus(2);
  GpuAgent a(dir, s);
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  std::string changed = with_gpus(2);
  changed.replace(changed.find("\"ecc_uv\": 0"), 11, "\"ecc_uv\": 2");  // GPU 0
  changed.replace(changed.find("\"retired_sbe\": 0"), 16, "\"retired_sbe\": 2");
  changed.replace(changed.rfind("\"remap\": [0, 0, 0, 0]"), 21, "\"remap\": [0, 0, 1, 0]");  // GPU 1
  write_scenario(dir, changed);
  auto v = a.wait([](const json::value& v) { return health_of(v, 0) == "unhealthy" && health_of(v, 1) == "degraded"; });
  CHECK_THAT(std::string(v.at("gpus").at(0).at("reasons").at(0).as_string()), Catch::Contains("2 uncorrectable ECC errors"));
  CHECK(v.at("gpus").at(0).at("retired_pages").at("single_bit") == 2);  // NVML's count query answers INSUFFICIENT_SIZE
  CHECK_THAT(std::string(v.at("gpus").at(1).at("reasons").at(0).as_string()), Catch::Contains("remapped rows pending"));
}

TEST_CASE("a driver/library version mismatch at init: unavailable, reboot recommended", "[gpu][agent]") {
  TempDir dir;
  GpuAgent a(dir, R"({"init": 18, "gpus": []})");
  auto v = a.wait([](const json::value& v) { return state_is(v, "unavailable"); });
  CHECK_THAT(std::string(v.at("detail").as_string()), Catch::Contains("driver/library version mismatch") && Catch::Contains("reboot"));
  auto status = json::parse(a.agent().curl("http://localhost/v1/status").output);
  CHECK(status.at("subsystems").at("gpu").at("state") == "degraded");
}

TEST_CASE("an old driver without the newer symbols: the older ones are used, the rest is absent", "[gpu][agent]") {
  TempDir dir;
  GpuAgent a(dir, with_gpus(1), FAKE_NVML_OLD_DIR);
  auto v = a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  const auto& missing = v.at("system").at("missing_symbols").as_array();
  CHECK(std::find(missing.begin(), missing.end(), json::value("nvmlDeviceGetRemappedRows")) != missing.end());
  CHECK(v.at("system").at("cuda_driver_version") == "12.4");  // nvmlSystemGetCudaDriverVersion
  CHECK(v.at("gpus").at(0).at("pci_bus_id") == "0000:1B:00.0");  // _v2: busIdLegacy
  CHECK(v.at("gpus").at(0).at("clock_event_reasons").at(0) == "idle");  // ...ThrottleReasons
  CHECK(v.at("gpus").at(0).at("remapped_rows").as_object().empty());
  CHECK(v.at("gpus").at(0).at("health") == "healthy");
}

TEST_CASE("an NVML call that hangs: the agent times out, stays responsive, recovers", "[gpu][agent]") {
  TempDir dir;
  GpuAgent a(dir, with_gpus(1));
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
  write_scenario(dir, with_gpus(1, R"("hang": "nvmlDeviceGetPowerUsage", )"));
  auto v = a.wait([](const json::value& v) { return state_is(v, "stuck"); });
  CHECK_THAT(std::string(v.at("detail").as_string()), Catch::Contains("NVML sample timed out after 1s") ||
                                                          Catch::Contains("still blocked"));
  for (int i = 0; i < 5; ++i) {
    auto t0 = std::chrono::steady_clock::now();
    CHECK(a.agent().curl("-s -o /dev/null -w '%{http_code}' http://localhost/v1/health").exit_code == 0);
    CHECK(std::chrono::steady_clock::now() - t0 < 1s);
    std::this_thread::sleep_for(200ms);
  }
  write_scenario(dir, with_gpus(1));
  a.wait([](const json::value& v) { return state_is(v, "sampled"); });
}
