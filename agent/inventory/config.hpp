// The inventory's settings (`inventory:`, docs/configuration.md).
#pragma once

#include <chrono>
#include <string>

#include "common/config_schema.hpp"

namespace instanced {

struct InventoryConfig {
  // The cloud's instance metadata service: Azure IMDS's compute document (http:// only; it
  // is a link-local address, never reached through a proxy). Empty: not asked.
  std::string metadata_endpoint = "http://169.254.169.254/metadata/instance/compute?api-version=2021-02-01";
  // From the connect to the answer's last byte; outside a cloud there is no answer.
  Duration metadata_timeout = std::chrono::seconds(2);

  template <class V>
  void visit(V& v) {
    v("metadata_endpoint", metadata_endpoint, check::max_length(2048));
    v("metadata_timeout", metadata_timeout,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::seconds(60)));
  }
};

}  // namespace instanced
