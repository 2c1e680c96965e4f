#include "agent/monitor/cgroup.hpp"

#include <charconv>
#include <filesystem>

#include "common/fs.hpp"

namespace instanced::monitor {

namespace {

// Each line of `text`, without its newline.
template <class F>
void for_each_line(std::string_view text, F&& f) {
  while (!text.empty()) {
    const auto nl = text.find('\n');
    f(text.substr(0, nl));
    text.remove_prefix(nl == std::string_view::npos ? text.size() : nl + 1);
  }
}

bool lists_memory(std::string_view controllers) {
  for (;;) {
    const auto comma = controllers.find(',');
    if (controllers.substr(0, comma) == "memory") return true;
    if (comma == std::string_view::npos) return false;
    controllers.remove_prefix(comma + 1);
  }
}

// A group's path as /proc/self/cgroup gives it: absolute, no "..", nothing odd.
bool plain_path(std::string_view p) {
  if (p.empty() || p.front() != '/' || p.find("/..") != std::string_view::npos) return false;
  for (char c : p)
    if (static_cast<unsigned char>(c) < 0x20) return false;
  return true;
}

}  // namespace

std::optional<std::string> oom_counter_file(std::string_view proc_cgroup, std::string_view root, bool unified) {
  std::optional<std::string> v1, v2;
  for_each_line(proc_cgroup, [&](std::string_view line) {
    // hierarchy-ID:controllers:path
    const auto a = line.find(':');
    const auto b = a == std::string_view::npos ? a : line.find(':', a + 1);
    if (b == std::string_view::npos) return;
    const std::string_view controllers = line.substr(a + 1, b - a - 1), path = line.substr(b + 1);
    if (!plain_path(path)) return;
    const std::string group = path == "/" ? "" : std::string(path);
    if (lists_memory(controllers)) v1 = std::string(root) + "/memory" + group + "/memory.oom_control";
    else if (line.substr(0, a) == "0" && controllers.empty() && unified) v2 = std::string(root) + group + "/memory.events";
  });
  return v1 ? v1 : v2;
}

std::optional<std::uint64_t> oom_kills(std::string_view counter_text) {
  std::optional<std::uint64_t> count;
  for_each_line(counter_text, [&](std::string_view line) {
    constexpr std::string_view key = "oom_kill ";
    if (line.substr(0, key.size()) != key) return;
    std::uint64_t n = 0;
    const std::string_view digits = line.substr(key.size());
    auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), n);
    if (ec == std::errc() && end == digits.data() + digits.size()) count = n;
  });
  return count;
}

bool cgroup_v2_only(std::string_view root) {
  std::error_code ec;
  return std::filesystem::exists(std::string(root) + "/cgroup.controllers", ec);
}

std::optional<std::uint64_t> own_oom_kills() {
  constexpr std::string_view root = "/sys/fs/cgroup";
  auto self = read_regular_file("/proc/self/cgroup", 64 << 10);
  if (!self) return std::nullopt;
  auto file = oom_counter_file(*self, root, cgroup_v2_only(root));
  if (!file) return std::nullopt;
  auto text = read_regular_file(*file, 64 << 10);
  return text ? oom_kills(*text) : std::nullopt;
}

}  // namespace instanced::monitor
