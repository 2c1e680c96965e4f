// The status socket's settings (`status:`, docs/configuration.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

struct StatusConfig {
  std::string socket = "/run/instanced/status.sock";
  std::string group = "instanced-ops";
  FileMode mode{0660};
  std::int64_t max_connections = 256;
  std::int64_t max_connections_per_process = 16;
  ByteSize max_header_bytes{8 * 1024};
  ByteSize max_body_bytes{64 * 1024};
  Duration request_timeout = std::chrono::seconds(10);
  // node exporter's textfile collector folder: /metrics written there as instanced.prom
  // every textfile_interval (empty: not written).
  std::string textfile_dir;
  Duration textfile_interval = std::chrono::seconds(15);

  template <class V>
  void visit(V& v) {
    v("socket", socket, check::absolute_path());
    v("group", group, check::not_empty());
    v("mode", mode);
    v("max_connections", max_connections, check::range<std::int64_t>(1, 10000));
    v("max_connections_per_process", max_connections_per_process, check::range<std::int64_t>(1, 10000));
    v("max_header_bytes", max_header_bytes, check::size_range(ByteSize{512}, ByteSize{1 << 20}));
    v("max_body_bytes", max_body_bytes, check::size_range(ByteSize{0}, ByteSize{16 << 20}));
    v("request_timeout", request_timeout,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(10)));
    v("textfile_dir", textfile_dir, check::absolute_path_or_empty());
    v("textfile_interval", textfile_interval, check::duration_range(std::chrono::seconds(1), std::chrono::hours(1)));
  }
};

}  // namespace instanced
