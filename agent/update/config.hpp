// Self-update's settings (`update:`, docs/configuration.md and docs/update.md).
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/config_schema.hpp"
#include "common/text.hpp"

namespace instanced {

namespace check {
// Ed25519 public keys: base64 of the 32-byte key (what `openssl pkey -pubout -outform DER |
// tail -c 32 | base64` prints).
inline auto ed25519_public_keys() {
  return [](const std::vector<std::string>& keys) -> std::optional<std::string> {
    for (std::size_t i = 0; i < keys.size(); ++i) {
      auto raw = base64_decoded(keys[i]);
      if (!raw || raw->size() != 32)
        return fmt::format("[{}]: not an Ed25519 public key (base64 of 32 bytes)", i);
    }
    return std::nullopt;
  };
}
}  // namespace check

struct UpdateConfig {
  // The keys a package's signature is checked against: any one of them will do, so that a
  // key is rotated by listing the new one beside the old. None: every update is refused.
  std::vector<std::string> public_keys;
  // The new agent must be READY, connected to the control plane and no less healthy than
  // the old one was within this time, or the previous package is installed again.
  Duration confirm_within = std::chrono::minutes(5);
  // The download: its size cap, and its limit from the connect to the last byte.
  ByteSize max_bytes{256ULL << 20};
  Duration download_timeout = std::chrono::minutes(10);
  // Free space the update leaves on the state folder's file system, at the least (the
  // package three times over: the download, the previous package and dpkg's unpacking).
  ByteSize keep_free{5ULL << 30};
  std::string ca_file;    // the download's trusted CAs; empty: the system's CA store
  std::string installer;  // empty: lib/instanced/instanced-update beside the agent's folder

  template <class V>
  void visit(V& v) {
    v("public_keys", public_keys, check::ed25519_public_keys());
    v("confirm_within", confirm_within, check::duration_range(std::chrono::seconds(5), std::chrono::hours(2)));
    v("max_bytes", max_bytes, check::size_range(ByteSize{1ULL << 20}, ByteSize{4ULL << 30}));
    v("download_timeout", download_timeout, check::duration_range(std::chrono::seconds(1), std::chrono::hours(2)));
    v("keep_free", keep_free);
    v("ca_file", ca_file, check::absolute_path_or_empty());
    v("installer", installer, check::absolute_path_or_empty());
  }
};

}  // namespace instanced
