#include "agent/mounts/plan.hpp"

#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <fmt/format.h>

namespace instanced::mounts {
namespace {

bool contains(std::string_view hay, std::string_view needle) { return hay.find(needle) != std::string_view::npos; }

std::string octal(FileMode m) { return fmt::format("{:04o}", m.value); }

// An endpoint with the account in the path (http://127.0.0.1:10000/devstoreaccount1):
// the storage emulator's (and Azure Stack's) path-style addressing.
bool path_style(const std::string& endpoint) {
  auto scheme = endpoint.find("://");
  if (scheme == std::string::npos) return false;
  auto slash = endpoint.find('/', scheme + 3);
  return slash != std::string::npos && slash + 1 < endpoint.size();
}

void split_host_port(const std::string& endpoint, std::string& host, unsigned& port) {
  auto colon = endpoint.rfind(':');
  if (colon != std::string::npos && endpoint.find(']') == std::string::npos) {
    host = endpoint.substr(0, colon);
    port = static_cast<unsigned>(std::strtoul(endpoint.c_str() + colon + 1, nullptr, 10));
  } else {
    host = endpoint;
    port = 445;
  }
}

// mountinfo escapes space, tab, newline and backslash as \ooo.
std::string unescape(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 3 < s.size() && std::isdigit(static_cast<unsigned char>(s[i + 1]))) {
      out.push_back(static_cast<char>((s[i + 1] - '0') * 64 + (s[i + 2] - '0') * 8 + (s[i + 3] - '0')));
      i += 3;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::vector<std::string_view> fields(std::string_view line) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < line.size()) {
    auto j = line.find(' ', i);
    if (j == std::string_view::npos) j = line.size();
    if (j > i) out.push_back(line.substr(i, j - i));
    i = j + 1;
  }
  return out;
}

}  // namespace

std::string blob_endpoint(const MountConfig& m) {
  if (!m.endpoint.empty()) return m.endpoint;
  return fmt::format("https://{}.blob.{}", m.account, m.endpoint_suffix);
}

BlobDriver choose_driver(const MountConfig& m, const Tools& tools) {
  if (m.driver != BlobDriver::automatic) return m.driver;
  return tools.blobfuse2.empty() && !tools.rclone.empty() ? BlobDriver::rclone : BlobDriver::blobfuse2;
}

std::string blobfuse2_config(const MountConfig& m, const StorageConfig& storage, const Secrets& secrets) {
  std::string y;
  auto line = [&y](std::string_view text) {
    y += text;
    y += '\n';
  };
  // Values are quoted as YAML double-quoted strings: names are validated, secrets are not.
  auto q = [](std::string_view v) {
    std::string out = "\"";
    for (char c : v) {
      if (c == '"' || c == '\\') out.push_back('\\');
      out.push_back(c);
    }
    return out + "\"";
  };
  line("# Written by instanced for the mount '" + m.name + "'; changes are overwritten.");
  line("foreground: true");
  line("allow-other: true");
  line(fmt::format("read-only: {}", m.read_only));
  line("logging:\n  type: syslog\n  level: log_warning");
  line("components:\n  - libfuse\n  - file_cache\n  - attr_cache\n  - azstorage");
  line("libfuse:\n  attribute-expiration-sec: 120\n  entry-expiration-sec: 120\n  negative-entry-expiration-sec: 240");
  // The cache on the temp disk with a cap: blobfuse2's default is 80 % of the free space.
  line("file_cache:");
  line("  path: " + q(storage.cache_dir + "/" + m.name));
  line("  timeout-sec: 120");
  line(fmt::format("  max-size-mb: {}", std::max<std::uint64_t>(1, m.cache_size.bytes >> 20)));
  line("attr_cache:\n  timeout-sec: 7200");
  line("azstorage:");
  line("  type: block");
  line("  account-name: " + q(m.account));
  line("  container: " + q(m.container));
  line("  endpoint: " + q(blob_endpoint(m)));
  if (!m.key_file.empty()) {
    line("  mode: key");
    line("  account-key: " + q(secrets.key));
  } else if (!m.sas_file.empty()) {
    line("  mode: sas");
    line("  sas: " + q("?" + secrets.sas));
  } else {
    line("  mode: msi");
    if (!m.identity_client_id.empty()) line("  appid: " + q(m.identity_client_id));
  }
  return y;
}

Result<MountPlan> plan_mount(const MountConfig& m, const StorageConfig& storage, const Secrets& secrets,
                             const Tools& tools, const std::string& secrets_dir) {
  MountPlan p;
  if (m.type == MountType::azure_files) {
    if (tools.mount_cifs.empty())
      return Error{fmt::format("{} is not installed (apt install cifs-utils)", storage.mount_cifs)};
    p.driver = "cifs";
    std::string endpoint = m.endpoint.empty() ? fmt::format("{}.file.{}", m.account, m.endpoint_suffix) : m.endpoint;
    split_host_port(endpoint, p.host, p.port);
    p.source = fmt::format("//{}/{}", p.host, m.share);
    p.fstype = "cifs";
    std::string cred = secrets_dir + "/" + m.name + ".cred";
    // The format both mount.cifs and smbclient -A read: NAME=value lines.
    p.files.push_back({cred, fmt::format("username={}\npassword={}\n", m.account, secrets.key)});
    std::string opts = fmt::format(
        "credentials={},vers={},serverino,nosharesock,actimeo=30,mfsymlinks,uid={},gid={},dir_mode={},file_mode={}",
        cred, m.smb_version, m.uid, m.gid, octal(m.dir_mode), octal(m.file_mode));
    if (p.port != 445) opts += fmt::format(",port={}", p.port);
    if (m.read_only) opts += ",ro";
    for (const auto& o : m.options) opts += "," + o;
    p.argv = {tools.mount_cifs, p.source, m.mount_point, "-o", opts};
    if (!tools.smbclient.empty())
      p.precheck_argv = {tools.smbclient, p.source, "-A", cred, "-p", std::to_string(p.port),
                         "-m", "SMB3", "-g", "-c", "volume"};
    return p;
  }

  std::string cache = storage.cache_dir + "/" + m.name;
  p.cache_dir = cache;
  p.stays_running = true;
  if (choose_driver(m, tools) == BlobDriver::blobfuse2) {
    if (tools.blobfuse2.empty())
      return Error{fmt::format("{} is not installed (driver blobfuse2; driver: rclone is the alternative)", storage.blobfuse2)};
    p.driver = "blobfuse2";
    std::string file = secrets_dir + "/" + m.name + ".blobfuse2.yaml";
    p.files.push_back({file, blobfuse2_config(m, storage, secrets)});
    p.argv = {tools.blobfuse2, "mount", m.mount_point, "--config-file=" + file};
    for (const auto& o : m.options) p.argv.push_back("-o=" + o);
    p.source = "blobfuse2";
    p.fstype = "fuse.blobfuse2";
    return p;
  }
  if (tools.rclone.empty()) return Error{fmt::format("{} is not installed (driver rclone)", storage.rclone)};
  p.driver = "rclone";
  p.source = ":azureblob:" + m.container;
  p.fstype = "fuse.rclone";
  // Configured through the environment: no config file, nothing secret on argv.
  p.env = {"RCLONE_CONFIG=/dev/null", "RCLONE_AZUREBLOB_ACCOUNT=" + m.account};
  std::string endpoint = blob_endpoint(m);
  if (!m.key_file.empty()) p.env.push_back("RCLONE_AZUREBLOB_KEY=" + secrets.key);
  if (!m.sas_file.empty()) p.env.push_back(fmt::format("RCLONE_AZUREBLOB_SAS_URL={}/{}?{}", endpoint, m.container, secrets.sas));
  if (m.managed_identity) {
    p.env.push_back("RCLONE_AZUREBLOB_USE_MSI=true");
    if (!m.identity_client_id.empty()) p.env.push_back("RCLONE_AZUREBLOB_MSI_CLIENT_ID=" + m.identity_client_id);
    if (!m.identity_endpoint.empty()) p.env.push_back("MSI_ENDPOINT=" + m.identity_endpoint);
  }
  if (!m.endpoint.empty()) {
    p.env.push_back("RCLONE_AZUREBLOB_ENDPOINT=" + m.endpoint);
    if (path_style(m.endpoint)) p.env.push_back("RCLONE_AZUREBLOB_USE_EMULATOR=true");
  }
  // --vfs-write-back 0s: a file is uploaded when it is closed. rclone finishes uploads under
  // way when it is unmounted, but drops those still waiting for their delay (they would be
  // sent at its next start from a cache on the temp disk, which a stop may wipe).
  p.argv = {tools.rclone,        "mount",       p.source,
            m.mount_point,       "--allow-other", "--vfs-cache-mode",
            "writes",            "--vfs-write-back", "0s",            "--cache-dir", cache,
            "--vfs-cache-max-size", fmt::format("{}M", std::max<std::uint64_t>(1, m.cache_size.bytes >> 20)),
            "--dir-cache-time",  "30s",         "--uid",
            std::to_string(m.uid), "--gid",     std::to_string(m.gid),
            "--dir-perms",       octal(m.dir_mode), "--file-perms",
            octal(m.file_mode),  "--umask",     "0000"};
  // --devname: mountinfo's source would otherwise carry a suffix for the overridden config
  // (rclone 1.55 and later; those before have neither the suffix nor the flag).
  if (tools.rclone_devname) p.argv.insert(p.argv.begin() + 4, {"--devname", p.source});
  if (m.read_only) p.argv.push_back("--read-only");
  for (const auto& o : m.options) p.argv.push_back("--" + o);  // later flags win: dir-cache-time=1s
  return p;
}

std::string_view to_string(Reason r) {
  switch (r) {
    case Reason::none: return "none";
    case Reason::port_blocked: return "port_blocked";
    case Reason::unreachable: return "unreachable";
    case Reason::auth_failed: return "auth_failed";
    case Reason::not_found: return "not_found";
    case Reason::no_kernel_support: return "no_kernel_support";
    case Reason::driver_missing: return "driver_missing";
    case Reason::timed_out: return "timed_out";
    case Reason::busy: return "busy";
    case Reason::stale: return "stale";
    case Reason::hung: return "hung";
    case Reason::other: return "other";
  }
  return "other";
}

Reason classify_output(std::string_view out) {
  // mount.cifs: "mount error(13): Permission denied"; smbclient: NT_STATUS_*; rclone and
  // blobfuse2: the storage service's error codes (403 AuthenticationFailed, 404 ContainerNotFound).
  for (auto s : {"NT_STATUS_LOGON_FAILURE", "NT_STATUS_ACCESS_DENIED", "NT_STATUS_WRONG_PASSWORD", "mount error(13)",
                 "AuthenticationFailed", "AuthorizationFailure", "403 Forbidden", "Status: 403", "StatusCode=403",
                 "Server failed to authenticate", "illegal base64", "failed to decode account key"})
    if (contains(out, s)) return Reason::auth_failed;
  for (auto s : {"NT_STATUS_BAD_NETWORK_NAME", "mount error(2)", "ContainerNotFound", "ShareNotFound",
                 "The specified container does not exist", "StatusCode=404"})
    if (contains(out, s)) return Reason::not_found;
  for (auto s : {"No such device", "mount error(19)", "cifs_mount failed w/return code = -19"})
    if (contains(out, s)) return Reason::no_kernel_support;
  for (auto s : {"NT_STATUS_CONNECTION_REFUSED", "NT_STATUS_IO_TIMEOUT", "NT_STATUS_HOST_UNREACHABLE",
                 "NT_STATUS_NETWORK_UNREACHABLE", "mount error(112)", "mount error(113)", "mount error(115)",
                 "connection refused", "no such host", "i/o timeout", "network is unreachable", "dial tcp"})
    if (contains(out, s)) return Reason::unreachable;
  return Reason::other;
}

std::vector<MountEntry> parse_mountinfo(std::string_view text) {
  std::vector<MountEntry> out;
  std::size_t pos = 0;
  while (pos < text.size()) {
    auto nl = text.find('\n', pos);
    if (nl == std::string_view::npos) nl = text.size();
    auto f = fields(text.substr(pos, nl - pos));
    pos = nl + 1;
    // ID PARENT MAJ:MIN ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER_OPTIONS
    auto dash = std::find(f.begin(), f.end(), std::string_view("-"));
    if (f.size() < 6 || dash == f.end() || f.end() - dash < 3) continue;
    out.push_back({unescape(f[4]), unescape(*(dash + 1)), unescape(*(dash + 2))});
  }
  return out;
}

std::optional<MountEntry> find_mount(const std::vector<MountEntry>& entries, std::string_view mount_point) {
  for (auto it = entries.rbegin(); it != entries.rend(); ++it)
    if (it->mount_point == mount_point) return *it;
  return std::nullopt;
}

bool matches(const MountPlan& plan, const MountEntry& e) {
  if (plan.driver == "cifs") return (e.fstype == "cifs" || e.fstype == "smb3") && e.source == plan.source;
  if (plan.driver == "blobfuse2") return e.fstype.starts_with("fuse") && (contains(e.fstype, "blobfuse2") || e.source == "blobfuse2");
  return e.fstype == plan.fstype && e.source == plan.source;
}

}  // namespace instanced::mounts
