// The diagnostics bundle's settings (`diagnostics:`, docs/configuration.md).
#pragma once

#include <chrono>
#include <cstdint>

#include "common/config_schema.hpp"

namespace instanced {

struct DiagnosticsConfig {
  // The bundle's size cap: what goes in is cut (tails kept) so that the .tar.gz, headers
  // and compression's worst case included, is never larger.
  ByteSize max_bytes{50ULL << 20};
  // How far back the agent's journal goes (the newest part is kept when it is over the cap).
  Duration journal_since = std::chrono::hours(24);
  // Each tool run for the bundle (journalctl, dmesg, nvidia-smi, tar) is killed after this.
  Duration tool_timeout = std::chrono::seconds(60);
  // The upload: tries in all, the first wait between two (doubled each time, at most 1
  // minute, with jitter), and one try's limit from the connect to the answer.
  std::int64_t upload_attempts = 5;
  Duration upload_backoff = std::chrono::seconds(2);
  Duration upload_timeout = std::chrono::minutes(10);
  // The last bundle is kept this long for instancectl to fetch, then removed.
  Duration keep_for = std::chrono::hours(1);

  template <class V>
  void visit(V& v) {
    v("max_bytes", max_bytes, check::size_range(ByteSize{1ULL << 20}, ByteSize{1ULL << 30}));
    v("journal_since", journal_since, check::duration_range(std::chrono::minutes(1), std::chrono::hours(24 * 31)));
    v("tool_timeout", tool_timeout, check::duration_range(std::chrono::seconds(1), std::chrono::minutes(30)));
    v("upload_attempts", upload_attempts, check::range<std::int64_t>(1, 20));
    v("upload_backoff", upload_backoff, check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(1)));
    v("upload_timeout", upload_timeout, check::duration_range(std::chrono::seconds(1), std::chrono::hours(2)));
    v("keep_for", keep_for, check::duration_range(std::chrono::seconds(1), std::chrono::hours(24 * 7)));
  }
};

}  // namespace instanced
