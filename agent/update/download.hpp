// The package's download: one GET over https (TLS 1.2+, the peer checked against the
// system's CA store or update.ca_file), through the proxy unless no_proxy names the host,
// its body streamed into a file while its SHA-256 is computed.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <variant>

#include "common/proxy_config.hpp"
#include "common/result.hpp"
#include "common/units.hpp"
#include "common/url.hpp"

namespace instanced::update {

struct Fetch {
  Url url;
  std::filesystem::path file;  // written (0600) from scratch
  std::uint64_t max_bytes = 0;
  Duration timeout{};          // from the connect to the last byte
  std::string ca_file;         // empty: the system's CA store
  ProxyConfig proxy;
  // Told the announced length (none: not announced) before the body is read; an error
  // refuses the download (the package would not fit).
  std::function<Result<void>(std::optional<std::uint64_t>)> admit;
};

struct Fetched {
  std::uint64_t bytes = 0;
  std::string sha256;  // lowercase hex
};

struct FetchError {
  bool refused = false;  // `admit` said no, or the body is over max_bytes
  std::string message;   // "GET https://host/path: the server answered 404 Not Found"
};

// The agent's stop is thrown; the file is removed on every error.
boost::asio::awaitable<std::variant<Fetched, FetchError>> fetch(Fetch f);

}  // namespace instanced::update
