// Human units in configuration and output: sizes ("5GiB", "512MiB", "10GB") and
// durations ("30s", "15m", "1h30m", "250ms").
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace instanced {

struct ByteSize {
  std::uint64_t bytes = 0;
  auto operator<=>(const ByteSize&) const = default;
};

using Duration = std::chrono::milliseconds;

Result<ByteSize> parse_size(std::string_view text);
Result<Duration> parse_duration(std::string_view text);
// Exact round-trip forms: the largest unit that divides the value.
std::string format_size(ByteSize size);
std::string format_duration(Duration d);
// Approximate, for people: "4.7 GiB".
std::string human_size(std::uint64_t bytes);

}  // namespace instanced
