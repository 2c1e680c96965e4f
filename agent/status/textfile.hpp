// The /metrics text for fleets that already collect node exporter: written into its textfile
// collector's folder (status.textfile_dir) as instanced.prom, so a Prometheus scraping node
// exporter on each VM gets instanced's metrics with no new port (docs/status.md).
#pragma once

#include <boost/asio/awaitable.hpp>

#include "agent/status/config.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/wake.hpp"

namespace instanced::status {

inline constexpr std::string_view kTextfileName = "instanced.prom";

// Every config.textfile_interval while config.textfile_dir is set: the router's answer to
// GET /metrics written to the folder atomically (a temporary file, not read by node
// exporter, renamed over instanced.prom), off the loop. A failure is logged once, with the
// file and the reason, until the file is written again. `poke`: the configuration changed.
// Until cancelled.
boost::asio::awaitable<void> write_metrics_textfile(Api& api, const Router& router, const StatusConfig& config,
                                                    Wake& poke, Logger log);

}  // namespace instanced::status
