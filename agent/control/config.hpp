// The control channel's settings (`control:`, docs/configuration.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"

namespace instanced {

struct ControlConfig {
  // wss://host[:port]/path of the control plane. Empty: the channel is off.
  std::string endpoint;
  bool insecure = false;  // allow ws:// (local development only)
  std::string token_file = "/etc/instanced/control-token";
  std::string ca_file;  // empty: the system CA store
  // http://host:port of the channel's own HTTP CONNECT proxy, over the agent's proxy
  // setting (proxy.url, common/proxy_config.hpp). Empty: that setting.
  std::string proxy;
  Duration heartbeat_interval = std::chrono::seconds(10);
  Duration ping_interval = std::chrono::seconds(20);
  Duration connect_timeout = std::chrono::seconds(15);
  Duration backoff_initial = std::chrono::seconds(1);
  Duration backoff_max = std::chrono::minutes(5);
  Duration backoff_reset_after = std::chrono::seconds(60);
  Duration initial_delay_max = std::chrono::seconds(5);
  // After an established connection drops (a control-plane restart drops the whole fleet
  // at once), retries until the next connection are drawn from [0, reconnect_spread]
  // (or the backoff's draw, when larger), so the fleet comes back spread out.
  Duration reconnect_spread = std::chrono::seconds(10);
  ByteSize max_message_bytes{1 << 20};
  std::int64_t max_json_depth = 32;
  ByteSize outbox_max_bytes{64ULL << 20};
  std::int64_t replay_per_second = 200;
  // set_config: whether the control plane may set settings (a managed drop-in), and how
  // long after a push no subsystem may be less healthy than before it for it to be kept.
  bool allow_set_config = true;
  Duration set_config_confirm_after = std::chrono::minutes(2);

  template <class V>
  void visit(V& v) {
    v("endpoint", endpoint, check::max_length(2048));
    v("insecure", insecure);
    v("token_file", token_file, check::absolute_path());
    v("ca_file", ca_file);
    v("proxy", proxy, check::max_length(2048), check::proxy_url());
    v("heartbeat_interval", heartbeat_interval,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("ping_interval", ping_interval, check::duration_range(std::chrono::milliseconds(100), std::chrono::hours(1)));
    v("connect_timeout", connect_timeout,
      check::duration_range(std::chrono::milliseconds(100), std::chrono::minutes(5)));
    v("backoff_initial", backoff_initial,
      check::duration_range(std::chrono::milliseconds(10), std::chrono::minutes(10)));
    v("backoff_max", backoff_max, check::duration_range(std::chrono::milliseconds(10), std::chrono::hours(2)));
    v("backoff_reset_after", backoff_reset_after,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::hours(1)));
    v("initial_delay_max", initial_delay_max,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(30)));
    v("reconnect_spread", reconnect_spread,
      check::duration_range(std::chrono::milliseconds(0), std::chrono::minutes(30)));
    v("max_message_bytes", max_message_bytes, check::size_range(ByteSize{1024}, ByteSize{64 << 20}));
    v("max_json_depth", max_json_depth, check::range<std::int64_t>(4, 256));
    v("outbox_max_bytes", outbox_max_bytes, check::size_range(ByteSize{64 << 10}, ByteSize{16ULL << 30}));
    v("replay_per_second", replay_per_second, check::range<std::int64_t>(1, 100000));
    v("allow_set_config", allow_set_config);
    v("set_config_confirm_after", set_config_confirm_after,
      check::duration_range(std::chrono::seconds(1), std::chrono::hours(24)));
  }
};

}  // namespace instanced
