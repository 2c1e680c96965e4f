#include "agent/mounts/config.hpp"

#include <cctype>
#include <fmt/format.h>

namespace instanced {

namespace {

// Azure Storage naming rules (learn.microsoft.com: "Naming and referencing shares" and
// "... containers"): accounts 3-24 lowercase letters and digits; shares and containers
// 3-63 lowercase letters, digits and hyphens, starting with a letter or digit, every
// hyphen between two letters or digits.
std::optional<std::string> account_problem(const std::string& v) {
  if (v.size() < 3 || v.size() > 24) return fmt::format("'{}' must have 3 to 24 characters", v);
  for (char c : v)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c))))
      return fmt::format("'{}' may contain only lowercase letters and digits", v);
  return std::nullopt;
}

std::optional<std::string> share_problem(const std::string& v) {
  if (v.size() < 3 || v.size() > 63) return fmt::format("'{}' must have 3 to 63 characters", v);
  for (std::size_t i = 0; i < v.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    bool alnum = std::islower(c) || std::isdigit(c);
    if (!alnum && c != '-') return fmt::format("'{}' may contain only lowercase letters, digits and hyphens", v);
    if (c == '-' && (i == 0 || i + 1 == v.size() || v[i - 1] == '-'))
      return fmt::format("'{}': a hyphen must be between two letters or digits", v);
  }
  return std::nullopt;
}

std::optional<std::string> mount_point_problem(const std::string& v) {
  if (v == "/") return std::string("must not be /");
  if (v.size() > 1 && v.back() == '/') return fmt::format("'{}' must not end with '/'", v);
  if (v.find("//") != std::string::npos || v.find("/./") != std::string::npos || v.find("/../") != std::string::npos ||
      v.ends_with("/.") || v.ends_with("/.."))
    return fmt::format("'{}' must be a normalised path (no '//', '.' or '..')", v);
  for (const char* system : {"/proc", "/sys", "/dev"})
    if (v == system || v.starts_with(std::string(system) + "/")) return fmt::format("'{}' is inside {}", v, system);
  return std::nullopt;
}

bool nested(const std::string& inner, const std::string& outer) {
  return inner == outer || inner.starts_with(outer + "/");
}

}  // namespace

std::optional<std::string> MountConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  auto where = [this](std::string_view field, const std::string& msg) { return fmt::format("mount '{}': {}: {}", name, field, msg); };
  if (auto p = account_problem(account)) return where("account", *p);
  if (auto p = mount_point_problem(mount_point)) return where("mount_point", *p);
  int credentials = !key_file.empty() + !sas_file.empty() + managed_identity;
  if (type == MountType::azure_files) {
    if (share.empty()) return where("share", "must be set for type azure-files");
    if (auto p = share_problem(share)) return where("share", *p);
    if (!container.empty()) return where("container", "only for type blob (azure-files uses 'share')");
    if (key_file.empty()) return where("key_file", "must be set for type azure-files (SMB needs the account key)");
    if (!sas_file.empty() || managed_identity) return where("sas_file", "SAS and managed identity are for type blob only");
    if (smb_version != "3.1.1" && smb_version != "3.02" && smb_version != "3.0")
      return where("smb_version", fmt::format("'{}' must be 3.1.1, 3.02 or 3.0 (Azure Files needs SMB 3)", smb_version));
    if (!endpoint.empty()) {
      if (endpoint.find("://") != std::string::npos || endpoint.find('/') != std::string::npos)
        return where("endpoint", fmt::format("'{}' must be HOST or HOST:PORT for type azure-files", endpoint));
    }
  } else {
    if (container.empty()) return where("container", "must be set for type blob");
    if (container != "$root")
      if (auto p = share_problem(container)) return where("container", *p);
    if (!share.empty()) return where("share", "only for type azure-files (blob uses 'container')");
    if (credentials != 1) return where("key_file", "set exactly one of key_file, sas_file and managed_identity");
    if (!endpoint.empty() && !endpoint.starts_with("https://") && !endpoint.starts_with("http://"))
      return where("endpoint", fmt::format("'{}' must be an http:// or https:// URL for type blob", endpoint));
  }
  if (!managed_identity && (!identity_client_id.empty() || !identity_endpoint.empty()))
    return where("identity_client_id", "only with managed_identity: true");
  for (std::size_t i = 0; i < options.size(); ++i) {
    const auto& o = options[i];
    if (o.empty() || o.find_first_of(", \t\n") != std::string::npos)
      return where(fmt::format("options[{}]", i), fmt::format("'{}' must be one option without commas or spaces", o));
    for (const char* secret : {"password", "pass=", "credentials", "username", "user=", "sas", "key"})
      if (o.starts_with(secret))
        return where(fmt::format("options[{}]", i), "credentials must come from key_file or sas_file, never options");
  }
  return std::nullopt;
}

std::optional<std::string> StorageConfig::validate() const {
  if (auto r = check::first_repeat(mounts, [](const MountConfig& m) { return m.name; }, "mounts")) return r;
  if (auto r = check::first_repeat(mounts, [](const MountConfig& m) { return m.mount_point; }, "mounts")) return r;
  for (std::size_t i = 0; i < mounts.size(); ++i)
    for (std::size_t j = 0; j < mounts.size(); ++j)
      if (i != j && nested(mounts[i].mount_point, mounts[j].mount_point))
        return fmt::format("mounts[{}]: mount_point '{}' is inside mounts[{}]'s '{}'", i, mounts[i].mount_point, j,
                           mounts[j].mount_point);
  if (cache_dir == "/") return std::string("cache_dir: must not be / (the cache belongs on the temp disk, /mnt)");
  if (backoff_initial > backoff_max) return std::string("backoff_initial: must not be larger than backoff_max");
  if (slow_probe >= probe_timeout) return std::string("slow_probe: must be shorter than probe_timeout");
  return std::nullopt;
}

}  // namespace instanced
