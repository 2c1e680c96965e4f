#include "common/units.hpp"

#include <array>
#include <cctype>
#include <charconv>
#include <fmt/format.h>
#include <limits>

namespace instanced {
namespace {

struct Unit {
  std::string_view name;
  std::uint64_t factor;
};

constexpr std::array kSizeUnits{
    Unit{"TiB", 1ULL << 40}, Unit{"GiB", 1ULL << 30}, Unit{"MiB", 1ULL << 20},
    Unit{"KiB", 1ULL << 10}, Unit{"TB", 1000ULL * 1000 * 1000 * 1000},
    Unit{"GB", 1000ULL * 1000 * 1000}, Unit{"MB", 1000ULL * 1000}, Unit{"kB", 1000},
    Unit{"KB", 1000}, Unit{"B", 1}};

constexpr std::array kDurationUnits{Unit{"ms", 1}, Unit{"s", 1000}, Unit{"m", 60'000},
                                    Unit{"h", 3'600'000}, Unit{"d", 86'400'000}};

std::string_view trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

bool mul_overflows(std::uint64_t a, std::uint64_t b) {
  return b != 0 && a > std::numeric_limits<std::uint64_t>::max() / b;
}

}  // namespace

Result<ByteSize> parse_size(std::string_view text) {
  auto s = trim(text);
  std::uint64_t number = 0;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), number);
  if (ec != std::errc() || ptr == s.data())
    return Error{fmt::format("invalid size '{}': expected a number with a unit such as 512MiB or 5GiB",
                             text)};
  auto unit = trim(std::string_view(ptr, s.data() + s.size() - ptr));
  if (unit.empty()) return ByteSize{number};
  for (const auto& u : kSizeUnits) {
    if (unit == u.name) {
      if (mul_overflows(number, u.factor)) return Error{fmt::format("size '{}' is too large", text)};
      return ByteSize{number * u.factor};
    }
  }
  return Error{fmt::format("invalid size unit '{}' in '{}': use B, KiB, MiB, GiB, TiB, kB, MB, GB or TB",
                           unit, text)};
}

Result<Duration> parse_duration(std::string_view text) {
  auto s = trim(text);
  if (s.empty()) return Error{"invalid duration '': expected for example 30s, 15m or 1h30m"};
  std::uint64_t total = 0;
  while (!s.empty()) {
    std::uint64_t number = 0;
    auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), number);
    if (ec != std::errc() || ptr == s.data())
      return Error{fmt::format("invalid duration '{}': expected for example 30s, 15m or 1h30m", text)};
    s.remove_prefix(ptr - s.data());
    std::size_t len = 0;
    while (len < s.size() && std::isalpha(static_cast<unsigned char>(s[len]))) ++len;
    auto unit = s.substr(0, len);
    if (unit.empty())
      return Error{fmt::format("duration '{}' needs a unit (ms, s, m, h, d), for example 30s", text)};
    const Unit* found = nullptr;
    for (const auto& u : kDurationUnits)
      if (unit == u.name) found = &u;
    if (!found)
      return Error{fmt::format("invalid duration unit '{}' in '{}': use ms, s, m, h or d", unit, text)};
    if (mul_overflows(number, found->factor) ||
        total + number * found->factor > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      return Error{fmt::format("duration '{}' is too large", text)};
    total += number * found->factor;
    s.remove_prefix(len);
  }
  return Duration{static_cast<std::int64_t>(total)};
}

std::string format_size(ByteSize size) {
  if (size.bytes == 0) return "0B";
  for (const auto& u : {kSizeUnits[0], kSizeUnits[1], kSizeUnits[2], kSizeUnits[3]})
    if (size.bytes % u.factor == 0) return fmt::format("{}{}", size.bytes / u.factor, u.name);
  return fmt::format("{}B", size.bytes);
}

std::string format_duration(Duration d) {
  auto ms = d.count();
  if (ms == 0) return "0s";
  for (auto it = kDurationUnits.rbegin(); it != kDurationUnits.rend(); ++it)
    if (ms % static_cast<std::int64_t>(it->factor) == 0)
      return fmt::format("{}{}", ms / static_cast<std::int64_t>(it->factor), it->name);
  return fmt::format("{}ms", ms);
}

std::string human_size(std::uint64_t bytes) {
  constexpr std::array names{"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
  double v = static_cast<double>(bytes);
  std::size_t i = 0;
  while (v >= 1024.0 && i + 1 < names.size()) {
    v /= 1024.0;
    ++i;
  }
  return i == 0 ? fmt::format("{} B", bytes) : fmt::format("{:.1f} {}", v, names[i]);
}

}  // namespace instanced
