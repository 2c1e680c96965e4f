#include "agent/gpu/cuda.hpp"

#include <algorithm>
#include <filesystem>
#include <fmt/format.h>
#include <regex>
#include <sstream>

#include "common/fs.hpp"

namespace instanced::gpu {
namespace fs = std::filesystem;
namespace {

// A version file or header: a regular file of at most 1 MiB (not a FIFO or a device put in
// its place), or nothing.
std::string read_small(const fs::path& p) {
  auto text = read_regular_file(p, 1 << 20);
  return text ? *text : std::string();
}

// "#define NAME 8" in a header.
std::optional<int> define_of(const std::string& text, const std::string& name) {
  std::regex re("#define[ \\t]+" + name + "[ \\t]+([0-9]+)");
  std::smatch m;
  if (!std::regex_search(text, m, re)) return std::nullopt;
  return std::stoi(m[1].str());
}

// CUDA 11.1+: version.json {"cuda": {"version": "12.2.140"}}; older: version.txt
// "CUDA Version 10.2.89".
std::string toolkit_version(const fs::path& dir) {
  std::smatch m;
  std::string json = read_small(dir / "version.json");
  static const std::regex in_json("\"cuda\"[^{]*\\{[^}]*\"version\"[ \\t]*:[ \\t]*\"([0-9.]+)\"");
  if (std::regex_search(json, m, in_json)) return m[1].str();
  std::string txt = read_small(dir / "version.txt");
  static const std::regex in_txt("CUDA Version ([0-9.]+)");
  if (std::regex_search(txt, m, in_txt)) return m[1].str();
  return {};
}

// major * 1000 + minor * 10, as NVML reports the driver's CUDA version.
std::optional<int> as_cuda_number(const std::string& version) {
  int major = 0, minor = 0;
  if (std::sscanf(version.c_str(), "%d.%d", &major, &minor) != 2) return std::nullopt;
  return major * 1000 + minor * 10;
}

}  // namespace

std::string cuda_version_text(int v) { return fmt::format("{}.{}", v / 1000, (v % 1000) / 10); }

CudaInventory scan_cuda(const std::vector<std::string>& toolkit_roots, const std::vector<std::string>& include_dirs,
                        std::optional<int> driver_cuda) {
  CudaInventory inv;
  for (const auto& root : toolkit_roots) {
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root, ec)) {
      std::string name = e.path().filename().string();
      if (!name.starts_with("cuda") || e.is_symlink(ec) || !e.is_directory(ec)) continue;  // cuda -> cuda-12.2
      std::string v = toolkit_version(e.path());
      if (!v.empty()) inv.toolkits.push_back({e.path().string(), v});
    }
  }
  std::sort(inv.toolkits.begin(), inv.toolkits.end(), [](const Toolkit& a, const Toolkit& b) { return a.path < b.path; });
  std::vector<std::string> dirs = include_dirs;
  for (const auto& t : inv.toolkits) dirs.push_back(t.path + "/include");
  for (const auto& dir : dirs) {
    for (const char* header : {"cudnn_version.h", "cudnn.h"}) {
      std::string text = read_small(fs::path(dir) / header);
      auto major = define_of(text, "CUDNN_MAJOR"), minor = define_of(text, "CUDNN_MINOR"),
           patch = define_of(text, "CUDNN_PATCHLEVEL");
      if (major && minor && patch) {
        inv.cudnn.emplace_back((fs::path(dir) / header).string(), fmt::format("{}.{}.{}", *major, *minor, *patch));
        break;
      }
    }
    std::string text = read_small(fs::path(dir) / "nccl.h");
    auto major = define_of(text, "NCCL_MAJOR"), minor = define_of(text, "NCCL_MINOR"), patch = define_of(text, "NCCL_PATCH");
    if (major && minor && patch)
      inv.nccl.emplace_back((fs::path(dir) / "nccl.h").string(), fmt::format("{}.{}.{}", *major, *minor, *patch));
  }
  if (driver_cuda)
    for (const auto& t : inv.toolkits)
      if (auto need = as_cuda_number(t.version); need && *need > *driver_cuda)
        inv.warnings.push_back(fmt::format("CUDA {} in {} needs a newer driver: the loaded driver supports CUDA {} "
                                           "(update the driver, or use a toolkit up to {})",
                                           t.version, t.path, cuda_version_text(*driver_cuda),
                                           cuda_version_text(*driver_cuda)));
  return inv;
}

}  // namespace instanced::gpu
