#include "agent/gpu/cuda.hpp"

#include <algorithm>
#include <boost/json/parse.hpp>
#include <cctype>
#include <filesystem>
#include <fmt/format.h>
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

bool is_blank(char c) { return c == ' ' || c == '\t'; }

// The digits (and dots, with `dots`) at the start of `s`.
std::string_view leading_number(std::string_view s, bool dots) {
  std::size_t n = 0;
  while (n < s.size() && (std::isdigit(static_cast<unsigned char>(s[n])) || (dots && s[n] == '.'))) ++n;
  return s.substr(0, n);
}

// "#define NAME 8" in a header, line by line (std::regex recursed once per character: a
// large hostile header could exhaust the stack).
std::optional<int> define_of(std::string_view text, std::string_view name) {
  for (std::size_t at = 0; at < text.size();) {
    std::size_t end = std::min(text.find('\n', at), text.size());
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    if (!line.starts_with("#define") || line.size() < 8 || !is_blank(line[7])) continue;
    line.remove_prefix(7);
    while (!line.empty() && is_blank(line.front())) line.remove_prefix(1);
    if (!line.starts_with(name) || line.size() == name.size() || !is_blank(line[name.size()])) continue;
    line.remove_prefix(name.size());
    while (!line.empty() && is_blank(line.front())) line.remove_prefix(1);
    auto digits = leading_number(line, false);
    if (digits.empty() || digits.size() > 6) continue;
    return std::stoi(std::string(digits));
  }
  return std::nullopt;
}

// version.json: {"cuda": {"version": "12.2.140"}, ...}.
std::string version_in_json(const std::string& text) {
  boost::system::error_code ec;
  auto v = boost::json::parse(text, ec);
  if (ec || !v.is_object()) return {};
  auto* cuda = v.as_object().if_contains("cuda");
  auto* version = cuda && cuda->is_object() ? cuda->as_object().if_contains("version") : nullptr;
  if (!version || !version->is_string()) return {};
  std::string_view s = version->as_string();
  return leading_number(s, true).size() == s.size() ? std::string(s) : std::string();
}

// CUDA 11.1+: version.json {"cuda": {"version": "12.2.140"}}; older: version.txt
// "CUDA Version 10.2.89".
std::string toolkit_version(const fs::path& dir) {
  if (auto v = version_in_json(read_small(dir / "version.json")); !v.empty()) return v;
  std::string txt = read_small(dir / "version.txt");
  constexpr std::string_view kLabel = "CUDA Version ";
  auto at = txt.find(kLabel);
  if (at == std::string::npos) return {};
  return std::string(leading_number(std::string_view(txt).substr(at + kLabel.size()), true));
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
