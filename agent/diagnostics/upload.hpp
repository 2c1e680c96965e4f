// The bundle's upload: one PUT of the file as a block blob to a pre-signed URL (a SAS),
// over https (the system's CA store) or http (an emulator), its body streamed from the
// file. The URL's query is the SAS: it is never logged, stored or shown.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "common/proxy_config.hpp"
#include "common/units.hpp"
#include "common/url.hpp"

namespace instanced::diagnostics {

struct PutOutcome {
  bool ok = false;
  bool retry = false;   // worth another try: no connection, a timeout, 408, 429 or 5xx
  unsigned status = 0;  // the HTTP status, 0 when none came
  std::string error;    // "the Blob service answered 403 Forbidden: AuthenticationFailed"
};

// PUTs `file` (`size` bytes) to `url`, through `proxy` unless its no_proxy names the host;
// `sent` is told the bytes written so far. The whole try is bounded by `timeout`. The
// agent's stop is thrown.
boost::asio::awaitable<PutOutcome> put_blob(Url url, std::filesystem::path file, std::uint64_t size,
                                            Duration timeout, std::function<void(std::uint64_t)> sent, ProxyConfig proxy);

}  // namespace instanced::diagnostics
