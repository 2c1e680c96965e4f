// Building blocks of the typed configuration: value types that have their own YAML
// spelling and the checks that fields declare next to their key in visit().
#pragma once

#include <cstdint>
#include <fmt/format.h>
#include <optional>
#include <string>

#include "common/units.hpp"

namespace instanced {

// A Unix permission mode, written in octal ("0660").
struct FileMode {
  unsigned value = 0;
  auto operator<=>(const FileMode&) const = default;
};

// Names of an enum's values, in declaration order; specialised next to each enum.
template <class E>
struct EnumNames;

namespace check {

// A check returns an error message for a bad value, nothing for a good one.
inline auto absolute_path() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (v.empty() || v.front() != '/') return fmt::format("'{}' must be an absolute path", v);
    return std::nullopt;
  };
}

inline auto not_empty() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (v.empty()) return std::string("must not be empty");
    return std::nullopt;
  };
}

inline auto max_length(std::size_t n) {
  return [n](const std::string& v) -> std::optional<std::string> {
    if (v.size() > n) return fmt::format("is {} characters long, at most {} allowed", v.size(), n);
    return std::nullopt;
  };
}

template <class T>
auto range(T lo, T hi) {
  return [lo, hi](const T& v) -> std::optional<std::string> {
    if (v < lo || v > hi) return fmt::format("{} is out of range [{}, {}]", v, lo, hi);
    return std::nullopt;
  };
}

inline auto size_range(ByteSize lo, ByteSize hi) {
  return [lo, hi](const ByteSize& v) -> std::optional<std::string> {
    if (v < lo || v > hi)
      return fmt::format("{} is out of range [{}, {}]", format_size(v), format_size(lo), format_size(hi));
    return std::nullopt;
  };
}

inline auto duration_range(Duration lo, Duration hi) {
  return [lo, hi](const Duration& v) -> std::optional<std::string> {
    if (v < lo || v > hi)
      return fmt::format("{} is out of range [{}, {}]", format_duration(v), format_duration(lo),
                         format_duration(hi));
    return std::nullopt;
  };
}

}  // namespace check
}  // namespace instanced
