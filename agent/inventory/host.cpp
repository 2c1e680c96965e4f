// The host's part of the inventory and the agent's own, read from files under a root.
#include <algorithm>
#include <boost/json.hpp>
#include <charconv>
#include <sys/utsname.h>

#include "agent/inventory/inventory.hpp"
#include "common/build_info.hpp"
#include "common/fs.hpp"
#include "common/text.hpp"
#include "common/tls.hpp"

namespace instanced::inventory {
namespace fs = std::filesystem;
namespace json = boost::json;

namespace {

constexpr std::size_t kMaxFile = 4 << 20;  // /proc/cpuinfo of a large VM stays far below
constexpr std::size_t kMaxText = 256;      // any one value sent
constexpr std::size_t kMaxDisks = 64;

std::string read_text(const fs::path& file) {
  auto text = read_regular_file(file, kMaxFile);
  return text ? *text : std::string();
}

std::string_view trimmed(std::string_view s) {
  const auto begin = s.find_first_not_of(" \t\r\n");
  if (begin == std::string_view::npos) return {};
  return s.substr(begin, s.find_last_not_of(" \t\r\n") - begin + 1);
}

// A value to send: trimmed, what is not UTF-8 (or a control character) escaped as \xNN,
// cut to kMaxText bytes at a character's boundary.
std::string text_value(std::string_view s) {
  std::string v = escape_for_log(trimmed(s));
  if (v.size() <= kMaxText) return v;
  std::size_t cut = kMaxText;
  while (cut > 0 && (static_cast<unsigned char>(v[cut]) & 0xc0) == 0x80) --cut;
  v.resize(cut);
  return v;
}

// "KEY: value" or KEY=value lines: the first value of `key`.
std::optional<std::string> first_value(std::string_view text, std::string_view key, char separator) {
  std::size_t at = 0;
  while (at < text.size()) {
    auto end = text.find('\n', at);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(at, end - at);
    at = end + 1;
    const auto sep = line.find(separator);
    if (sep == std::string_view::npos || trimmed(line.substr(0, sep)) != key) continue;
    return text_value(line.substr(sep + 1));
  }
  return std::nullopt;
}

// os-release's quoting: "value" or 'value' (the backslash escapes are rare and kept).
std::string unquoted(std::string v) {
  if (v.size() >= 2 && (v.front() == '"' || v.front() == '\'') && v.back() == v.front()) v = v.substr(1, v.size() - 2);
  return v;
}

json::object os_part(const fs::path& root) {
  std::string text = read_text(root / "etc/os-release");
  if (text.empty()) text = read_text(root / "usr/lib/os-release");
  json::object os;
  for (auto [key, name] : {std::pair{"ID", "id"}, {"NAME", "name"}, {"VERSION_ID", "version"}, {"PRETTY_NAME", "pretty"}})
    if (auto v = first_value(text, key, '=')) os[name] = unquoted(*v);
  return os;
}

json::object cpu_part(const fs::path& root) {
  const std::string text = read_text(root / "proc/cpuinfo");
  std::int64_t count = 0;
  for (std::size_t at = 0; (at = text.find("processor", at)) != std::string::npos; at += 9)
    if (at == 0 || text[at - 1] == '\n') ++count;
  json::object cpu;
  if (count > 0) cpu["count"] = count;
  if (auto model = first_value(text, "model name", ':')) cpu["model"] = *model;
  return cpu;
}

std::optional<std::uint64_t> number(const std::string& text) {
  std::uint64_t n = 0;
  const auto* begin = text.data();
  const auto* end = begin + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc() || ptr == begin) return std::nullopt;
  return n;
}

std::optional<std::uint64_t> memory_bytes(const fs::path& root) {
  auto total = first_value(read_text(root / "proc/meminfo"), "MemTotal", ':');  // "25165824 kB"
  if (!total) return std::nullopt;
  auto kib = number(*total);
  if (!kib) return std::nullopt;
  return *kib * 1024;
}

// Block devices backed by a device (not loop, ram or device-mapper ones), by name.
json::array disks_part(const fs::path& root) {
  std::vector<std::pair<std::string, std::uint64_t>> found;
  std::error_code ec;
  for (fs::directory_iterator it(root / "sys/block", ec), end; !ec && it != end; it.increment(ec)) {
    const fs::path dir = it->path();
    std::error_code missing;  // apart from `ec`, which ends the walk
    if (!fs::exists(dir / "device", missing) || found.size() >= kMaxDisks) continue;
    auto sectors = number(std::string(trimmed(read_text(dir / "size"))));
    if (sectors) found.emplace_back(text_value(dir.filename().string()), *sectors * 512);
  }
  std::sort(found.begin(), found.end());
  json::array disks;
  for (const auto& [name, bytes] : found) disks.push_back(json::object{{"name", name}, {"bytes", bytes}});
  return disks;
}

}  // namespace

json::object host_part(const fs::path& root) {
  json::object host;
  if (auto os = os_part(root); !os.empty()) host["os"] = std::move(os);
  if (auto kernel = text_value(read_text(root / "proc/sys/kernel/osrelease")); !kernel.empty()) host["kernel"] = kernel;
  struct utsname u {};
  if (::uname(&u) == 0) host["arch"] = text_value(u.machine);
  if (auto cpu = cpu_part(root); !cpu.empty()) host["cpu"] = std::move(cpu);
  if (auto memory = memory_bytes(root)) host["memory_bytes"] = *memory;
  if (auto disks = disks_part(root); !disks.empty()) host["disks"] = std::move(disks);
  return host;
}

json::object agent_part() {
  return json::object{{"version", build_version()}, {"toolchain", build_toolchain()}, {"tls", tls::library_version()}};
}

}  // namespace instanced::inventory
