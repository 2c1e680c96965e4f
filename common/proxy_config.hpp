// The one proxy setting (`proxy:`, docs/configuration.md#proxy) that every outbound
// connection of the agent follows: the control channel, the blob pre-check, the
// diagnostics upload (through common/proxy.hpp), the FUSE drivers (their environment).
#pragma once

#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

struct ProxyConfig {
  // http://host:port of an HTTP proxy (CONNECT for the agent's own connections). Empty:
  // https_proxy / http_proxy from the agent's environment, if any.
  std::string url;
  // A file (mode 0600) whose first line is "user:password": sent to the proxy as
  // Proxy-Authorization (Basic), never on a command line. Empty: none.
  std::string credentials_file;
  // Hosts reached without the proxy: a name (with its subdomains), ".domain", an address,
  // or "*". The metadata service and loopback by default.
  std::vector<std::string> no_proxy{"localhost", "127.0.0.1", "::1", "169.254.169.254"};

  template <class V>
  void visit(V& v) {
    v("url", url, check::max_length(2048), check::proxy_url());
    v("credentials_file", credentials_file, check::absolute_path_or_empty());
    v("no_proxy", no_proxy);
  }
};

}  // namespace instanced
