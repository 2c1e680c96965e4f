// Outbound connections through the configured proxy (common/proxy_config.hpp): which
// connections take it, the HTTP CONNECT tunnel, and the environment that hands it to the
// FUSE drivers (Go programs: rclone, blobfuse2).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/proxy_config.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"

namespace instanced {

struct Proxy {
  std::string host;
  std::string port;
  Secret authorization;  // the Proxy-Authorization value ("Basic …"); empty: none
  Secret userinfo;       // "user:password", percent-encoded, for a URL; empty: none
};

// Whether `host` is in a no_proxy list: a name or its subdomain, ".domain" (the same),
// an exact address, or "*".
bool host_in(std::string_view host, const std::vector<std::string>& list);

// A proxy URL ("http://host:port", or "host:port") with `credentials_file`'s user and
// password, if given. Errors start with `key` ("proxy.url: only http:// proxies …").
Result<Proxy> parse_proxy(std::string url, const std::string& credentials_file, std::string_view key);

// The proxy for a connection to `host` (`tls`: https or wss): proxy.url unless the host is
// in proxy.no_proxy; without proxy.url, https_proxy or http_proxy from the environment
// unless no_proxy (the configured or the environment's) names the host. Nothing: direct.
Result<std::optional<Proxy>> proxy_for(std::string_view host, bool tls, const ProxyConfig& config);

// TCP to host:port, or to the proxy and through its CONNECT tunnel to host:port, within
// the stream's expiry. Errors: "cannot resolve HOST: …", "cannot connect to HOST port P:
// …", "proxy H:P refused CONNECT HOST:PORT: HTTP 407". The agent's stop is thrown.
boost::asio::awaitable<Result<void>> dial(boost::beast::tcp_stream& stream, const std::string& host,
                                          const std::string& port, const std::optional<Proxy>& proxy);

// HTTPS_PROXY, HTTP_PROXY and NO_PROXY ("NAME=value") for a program that reads them from
// its environment (rclone, blobfuse2: Go's ProxyFromEnvironment): proxy.url with its
// credentials in the URL (an environment is readable by its owner only, unlike argv);
// without proxy.url, the agent's own https_proxy, http_proxy and no_proxy, if set.
Result<std::vector<std::string>> proxy_environment(const ProxyConfig& config);

}  // namespace instanced
