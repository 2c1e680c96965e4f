// Building blocks of the typed configuration: value types that have their own YAML
// spelling and the checks that fields declare next to their key in visit().
#pragma once

#include <cctype>
#include <cstdint>
#include <map>
#include <fmt/format.h>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/units.hpp"

namespace instanced {

// A Unix permission mode, written in octal ("0660").
struct FileMode {
  unsigned value = 0;
  auto operator<=>(const FileMode&) const = default;
};

// Text of several lines (an inline script): UTF-8; tabs and newlines allowed, other
// control characters not.
struct MultilineText {
  std::string value;
  bool empty() const { return value.empty(); }
  auto operator<=>(const MultilineText&) const = default;
};

// A disk-space threshold: an absolute size ("5GiB") or a share of the file system ("10%").
struct Threshold {
  std::uint64_t bytes = 0;
  double percent = -1;  // >= 0: a percentage of the total size, `bytes` unused
  bool is_percent() const { return percent >= 0; }
  std::uint64_t of(std::uint64_t total) const {
    return is_percent() ? static_cast<std::uint64_t>(static_cast<double>(total) * percent / 100.0) : bytes;
  }
  bool operator==(const Threshold&) const = default;
};

// Names of an enum's values, in declaration order; specialised next to each enum.
template <class E>
struct EnumNames;

// An enum value's name, and the value a name stands for (nothing for an unknown name).
template <class E>
std::string_view enum_name(E e) {
  return EnumNames<E>::names[static_cast<std::size_t>(e)];
}
template <class E>
std::optional<E> enum_from_name(std::string_view name) {
  const auto& names = EnumNames<E>::names;
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return static_cast<E>(i);
  return std::nullopt;
}

namespace check {

// A check returns an error message for a bad value, nothing for a good one.
inline auto absolute_path() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (v.empty() || v.front() != '/') return fmt::format("'{}' must be an absolute path", v);
    return std::nullopt;
  };
}

// An absolute path, or empty for "not set".
inline auto absolute_path_or_empty() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (!v.empty() && v.front() != '/') return fmt::format("'{}' must be an absolute path", v);
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

// A name used in file names and URLs: 1 to 64 of [A-Za-z0-9._-], not starting with a dot.
inline auto identifier() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (v.empty() || v.size() > 64) return std::string("must have 1 to 64 characters");
    if (v.front() == '.') return fmt::format("'{}' must not start with a dot", v);
    for (char c : v)
      if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
        return fmt::format("'{}' may contain only letters, digits, '.', '_' and '-'", v);
    return std::nullopt;
  };
}

// An environment variable name: [A-Za-z_][A-Za-z0-9_]*.
inline bool is_environment_name(std::string_view k) {
  bool ok = !k.empty() && !std::isdigit(static_cast<unsigned char>(k.front()));
  for (char c : k) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '_');
  return ok;
}

// Environment variable names; INSTANCED_* is the agent's own.
inline auto environment_names() {
  return [](const std::map<std::string, std::string>& env) -> std::optional<std::string> {
    for (const auto& [k, v] : env) {
      if (!is_environment_name(k)) return fmt::format("'{}' is not a valid environment variable name", k);
      if (k.starts_with("INSTANCED_")) return fmt::format("'{}': names starting with INSTANCED_ are set by the agent", k);
    }
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

// A proxy's URL: empty, "host:port" or "http://host:port"; no user or password in it (they
// go in proxy.credentials_file: the configuration is shown by get_config and in
// diagnostics bundles). The value is never repeated in the message.
inline auto proxy_url() {
  return [](const std::string& v) -> std::optional<std::string> {
    if (v.empty()) return std::nullopt;
    const auto sep = v.find("://");
    if (sep != std::string::npos && v.substr(0, sep) != "http")
      return fmt::format("'{}://…': only http:// proxies are supported", v.substr(0, std::min<std::size_t>(sep, 16)));
    const std::string_view authority = std::string_view(v).substr(sep == std::string::npos ? 0 : sep + 3);
    if (authority.substr(0, authority.find('/')).find('@') != std::string_view::npos)
      return std::string("a user or password in the URL is not allowed: put them in proxy.credentials_file");
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

// "LIST[i]: 'KEY' is already used by LIST[j]" for the first item whose key repeats.
template <class T, class Key>
std::optional<std::string> first_repeat(const std::vector<T>& items, Key key, std::string_view list) {
  for (std::size_t i = 0; i < items.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (key(items[i]) == key(items[j]))
        return fmt::format("{}[{}]: '{}' is already used by {}[{}]", list, i, key(items[i]), list, j);
  return std::nullopt;
}

}  // namespace check
}  // namespace instanced
