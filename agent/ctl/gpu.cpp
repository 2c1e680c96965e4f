// instancectl: GPUs and the CUDA stack.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {

int cmd_gpu(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/gpu");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  const std::string state = str(v, "state");
  int rc = kHealthy;
  for (const auto& g : v.at("gpus").as_array())
    if (str(g, "health") != "healthy") rc = kDegraded;
  if (state == "stuck" || (state == "unavailable" && v.as_object().contains("detail") &&
                           str(v, "detail").find("not loaded") == std::string::npos))
    rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  const auto& sys = v.at("system");
  if (state != "sampled") {
    std::cout << "GPU: " << st.state(state == "stuck" ? "failed" : state);
    if (v.as_object().contains("detail")) std::cout << " (" << str(v, "detail") << ")";
    std::cout << "\n";
  }
  if (sys.as_object().contains("driver_version"))
    std::cout << "driver " << str(sys, "driver_version") << ", CUDA " << str(sys, "cuda_driver_version") << " supported\n";
  if (!v.at("gpus").as_array().empty()) {
    std::cout << pad("GPU", 5, 3) << pad("NAME", 26, 4) << pad("HEALTH", 12, 6) << pad("MEMORY", 24, 6) << pad("UTIL", 6, 4)
              << pad("TEMP", 7, 4) << pad("POWER", 16, 5) << "ECC (unc)\n";
    for (const auto& g : v.at("gpus").as_array()) {
      std::string idx = str(g, "index"), name = str(g, "name"), health = str(g, "health");
      std::string mem = fmt::format("{} / {}", human(num(g.at("memory"), "used_bytes")), human(num(g.at("memory"), "total_bytes")));
      std::string util = fmt::format("{:.0f}%", num(g.at("utilization"), "gpu_percent"));
      std::string temp = fmt::format("{:.0f}C", num(g.at("temperature"), "celsius"));
      std::string power = fmt::format("{:.0f}/{:.0f}W", num(g.at("power"), "watts"), num(g.at("power"), "limit_watts"));
      std::string ecc = g.at("ecc").as_object().contains("uncorrected_volatile") ? str(g.at("ecc"), "uncorrected_volatile") : "-";
      std::string shown = health == "healthy" ? "ok" : health;
      std::cout << pad(idx, 5, idx.size()) << pad(name, 26, name.size()) << pad(st.state(shown), 12, shown.size())
                << pad(mem, 24, mem.size()) << pad(util, 6, util.size()) << pad(temp, 7, temp.size())
                << pad(power, 16, power.size()) << ecc << "\n";
      for (const auto& r : g.at("reasons").as_array()) std::cout << "    " << json::value_to<std::string>(r) << "\n";
    }
  }
  for (const auto& x : v.at("xids").as_array())
    std::cout << "XID " << str(x, "xid") << " at " << str(x, "time") << " on "
              << (x.as_object().contains("gpu") ? "GPU " + str(x, "gpu") : "PCI " + str(x, "pci_bus_id")) << ": "
              << str(x, "meaning") << " (" << str(x, "source") << ")\n";
  if (auto* cuda = v.as_object().if_contains("cuda")) {
    for (const auto& t : cuda->at("toolkits").as_array()) std::cout << "CUDA toolkit " << str(t, "version") << " in " << str(t, "path") << "\n";
    for (const char* lib : {"cudnn", "nccl"})
      for (const auto& t : cuda->at(lib).as_array())
        std::cout << (std::string_view(lib) == "cudnn" ? "cuDNN " : "NCCL ") << str(t, "version") << " (" << str(t, "file") << ")\n";
    for (const auto& w : cuda->at("warnings").as_array()) std::cout << st.state("warning") << ": " << json::value_to<std::string>(w) << "\n";
  }
  return rc;
}

}  // namespace instanced::ctl
