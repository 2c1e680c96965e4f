#include "common/url.hpp"

#include <boost/url/parse.hpp>
#include <fmt/format.h>

namespace instanced {
namespace urls = boost::urls;

std::string host_port(const std::string& host, const std::string& port) {
  return host.find(':') == std::string::npos ? fmt::format("{}:{}", host, port) : fmt::format("[{}]:{}", host, port);
}

std::string Url::authority() const { return host_port(host, port); }

std::string Url::shown() const { return fmt::format("{}://{}{}", scheme, authority(), target.substr(0, target.find('?'))); }

namespace {

// The URL as it may be shown: without what comes before an '@' (a password, perhaps).
std::string shown(std::string_view url) {
  auto at = url.find('@');
  if (at == std::string_view::npos) return std::string(url);
  auto sep = url.find("://");
  return fmt::format("{}://***{}", sep == std::string_view::npos ? "" : url.substr(0, sep), url.substr(at));
}

std::optional<std::string> scheme_of(urls::url_view v) {
  switch (v.scheme_id()) {
    case urls::scheme::http: return "http";
    case urls::scheme::https: return "https";
    case urls::scheme::ws: return "ws";
    case urls::scheme::wss: return "wss";
    default: return std::nullopt;
  }
}

}  // namespace

Result<Url> parse_url(std::string_view url, bool allow_userinfo) {
  auto parsed = urls::parse_uri(url);
  std::optional<std::string> scheme = parsed ? scheme_of(*parsed) : std::nullopt;
  if (!scheme) return Error{fmt::format("'{}' is not an http(s):// or ws(s):// URL", shown(url))};
  const urls::url_view& v = *parsed;
  if (v.has_userinfo() && !allow_userinfo) return Error{"a user or password in the URL is not supported"};
  Url u;
  u.scheme = *scheme;
  u.tls = u.scheme == "https" || u.scheme == "wss";
  u.host = v.host_address();
  if (u.host.empty()) return Error{fmt::format("'{}' has no host", shown(url))};
  if (!v.has_port()) {
    u.port = u.tls ? "443" : "80";
  } else {
    u.port = std::string(v.port());
    bool number = !u.port.empty() && u.port.size() <= 5 && u.port.find_first_not_of("0123456789") == std::string::npos;
    if (!number || std::stoi(u.port) < 1 || std::stoi(u.port) > 65535)
      return Error{fmt::format("'{}' has an invalid port", shown(url))};
  }
  if (!v.encoded_target().empty()) u.target = std::string(v.encoded_target());
  if (v.has_userinfo()) {
    u.user = v.user();
    u.password = v.password();
  }
  return u;
}

}  // namespace instanced
