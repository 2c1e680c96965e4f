// A secret (storage key, SAS token, control-plane token). It formats as "***" everywhere
// (fmt/spdlog, iostreams, Boost.JSON) so it cannot leak into logs or status output by
// accident; the value is reachable only through reveal(), which is easy to grep for.
#pragma once

#include <boost/json/value_from.hpp>
#include <fmt/format.h>
#include <ostream>
#include <string>

#include "common/result.hpp"

namespace instanced {

class Secret {
 public:
  Secret() = default;
  explicit Secret(std::string value) : value_(std::move(value)) {}
  const std::string& reveal() const { return value_; }
  bool empty() const { return value_.empty(); }
  bool operator==(const Secret&) const = default;
  static constexpr const char* kRedacted = "***";

 private:
  std::string value_;
};

// Reads a secret from the first line of a file (trailing blanks dropped). Refused unless it
// is a regular file that only its owner may read (mode 0600 or 0400); errors start with
// `what` ("control.token_file /etc/x: mode 0644 lets others read it; chmod 600 it").
Result<Secret> read_secret_file(const std::string& path, std::string_view what);

inline std::ostream& operator<<(std::ostream& os, const Secret&) { return os << Secret::kRedacted; }

inline void tag_invoke(boost::json::value_from_tag, boost::json::value& jv, const Secret&) {
  jv = Secret::kRedacted;
}

}  // namespace instanced

template <>
struct fmt::formatter<instanced::Secret> : fmt::formatter<std::string_view> {
  template <class Ctx>
  auto format(const instanced::Secret&, Ctx& ctx) const {
    return fmt::formatter<std::string_view>::format(instanced::Secret::kRedacted, ctx);
  }
};
