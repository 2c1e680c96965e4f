#include "common/url.hpp"

#include <fmt/format.h>

namespace instanced {

Result<Url> parse_url(std::string_view url) {
  Url u;
  auto sep = url.find("://");
  u.scheme = sep == std::string_view::npos ? "" : std::string(url.substr(0, sep));
  if (u.scheme == "http" || u.scheme == "ws")
    u.tls = false;
  else if (u.scheme != "https" && u.scheme != "wss")
    return Error{fmt::format("'{}' is not an http(s):// or ws(s):// URL", url)};
  std::string_view rest = url.substr(sep + 3);
  auto slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (slash != std::string_view::npos) u.target = std::string(rest.substr(slash));
  auto colon = authority.rfind(':');
  if (colon != std::string_view::npos && authority.find(']') == std::string_view::npos) {
    u.host = std::string(authority.substr(0, colon));
    u.port = std::string(authority.substr(colon + 1));
  } else {
    u.host = std::string(authority);
    u.port = u.tls ? "443" : "80";
  }
  if (u.host.empty()) return Error{fmt::format("'{}' has no host", url)};
  if (u.port.empty() || u.port.find_first_not_of("0123456789") != std::string::npos)
    return Error{fmt::format("'{}' has an invalid port", url)};
  return u;
}

}  // namespace instanced
