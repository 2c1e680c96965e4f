// The parts of an http(s):// or ws(s):// URL that a client needs to connect: scheme,
// host, port (the scheme's default when absent) and the request target.
#pragma once

#include <string>
#include <string_view>

#include "common/result.hpp"

namespace instanced {

struct Url {
  std::string scheme;  // "https", "http", "wss", "ws"
  bool tls = true;     // https and wss
  std::string host;
  std::string port;
  std::string target = "/";  // the path (and query), "/" when absent
};

// Error (without the URL's owner, which the caller adds): "'ftp://x' is not an http(s)://
// or ws(s):// URL", "'https://:1/' has no host", "'http://h:x/' has an invalid port".
Result<Url> parse_url(std::string_view url);

}  // namespace instanced
