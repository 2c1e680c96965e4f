// The parts of an http(s):// or ws(s):// URL that a client needs to connect: scheme,
// host, port (the scheme's default when absent), the request target and any userinfo.
// Parsed by Boost.URL (RFC 3986), so an IPv6 literal keeps its port ("[::1]:8443").
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace instanced {

struct Url {
  std::string scheme;  // "https", "http", "wss", "ws"
  bool tls = true;     // https and wss
  std::string host;    // what to resolve and connect to: a name, or an address (IPv6 without brackets)
  std::string port;
  std::string target = "/";         // the path (and query), "/" when absent
  std::optional<std::string> user;  // "user:password@" before the host, percent-decoded
  std::string password;

  // host:port for a Host header or an HTTP CONNECT, an IPv6 address in brackets.
  std::string authority() const;
  // "https://host:port/path": what results and logs may show of the URL, without its query
  // (a pre-signed URL's signature) or a user and password.
  std::string shown() const;
};

// "host:port", an IPv6 address in brackets.
std::string host_port(const std::string& host, const std::string& port);

// Error (without the URL's owner, which the caller adds): "'ftp://x' is not an http(s)://
// or ws(s):// URL", "'https://:1/' has no host", "'http://h:99999/' has an invalid port",
// and, unless `allow_userinfo`, "a user or password in the URL is not supported" (the URL
// is not repeated then: it may hold a password).
Result<Url> parse_url(std::string_view url, bool allow_userinfo = false);

}  // namespace instanced
