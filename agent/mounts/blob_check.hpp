// Before a blob container is mounted: one signed request to the Blob service (Get
// Container Properties), so that a wrong key, an expired SAS, a missing container and an
// unreachable endpoint are told apart, whatever the FUSE driver reports (blobfuse2 logs to
// syslog; rclone in emulator mode uses the emulator's well-known key).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <chrono>
#include <string>

#include "agent/mounts/plan.hpp"
#include "common/proxy_config.hpp"
#include "common/units.hpp"

namespace instanced::mounts {

struct BlobUrl {
  bool tls = true;
  std::string host;
  std::string port;
  std::string path;  // the container's path: "/container", or "/account/container" (path-style)
  std::string canonical_resource;  // "/account/container" or "/account/account/container"
};
// The container's URL parts, from blob_endpoint(m). Error: not an http(s) URL.
Result<BlobUrl> container_url(const MountConfig& m);

// The Shared Key signature (Authorization header value) of a GET of the container's
// properties at `date` (RFC 1123) with API `version`. Error: the key is not base64.
Result<std::string> shared_key_authorization(const std::string& account, const std::string& key,
                                             const std::string& canonical_resource, const std::string& date,
                                             const std::string& version);

struct AccessCheck {
  Reason reason = Reason::none;  // none: the container is reachable with these credentials
  std::string message;
};
// Managed identity is not checked (it needs a token from the instance metadata service).
// Through `proxy` (its CONNECT tunnel) unless the endpoint is in its no_proxy list.
boost::asio::awaitable<AccessCheck> check_blob_access(boost::asio::any_io_executor ex, const MountConfig& m,
                                                      const Secrets& secrets, Duration timeout, const ProxyConfig& proxy);

}  // namespace instanced::mounts
