// Mount plans, mountinfo parsing, error classification, the blobfuse2 configuration and
// the storage section of the config: pure functions, checked without mounting anything.
#include <algorithm>
#include <catch2/catch.hpp>
#include <set>
#include <yaml-cpp/yaml.h>

#include "agent/mounts/blob_check.hpp"
#include "agent/mounts/plan.hpp"
#include "agent/config/config.hpp"

using namespace instanced;
using namespace instanced::mounts;

namespace {

const Tools kAll{"/sbin/mount.cifs", "/usr/bin/smbclient", "/usr/bin/blobfuse2", "/usr/bin/rclone"};
const Secrets kSecrets{"c2VjcmV0LWtleS1ieXRlcw==", "sv=2022-11-02&sig=SECRETSIG"};

MountConfig files_mount() {
  MountConfig m;
  m.name = "users";
  m.type = MountType::azure_files;
  m.account = "wsstorage01";
  m.share = "code-391ff5ac";
  m.mount_point = "/home/azureuser/cloudfiles/code";
  m.key_file = "/etc/instanced/keys/wsstorage01";
  m.uid = 1000;
  m.gid = 1000;
  return m;
}

MountConfig blob_mount(BlobDriver d) {
  MountConfig m;
  m.name = "datastore";
  m.type = MountType::blob;
  m.account = "wsstorage01";
  m.container = "training-data";
  m.mount_point = "/mnt/datastore";
  m.key_file = "/etc/instanced/keys/wsstorage01";
  m.driver = d;
  return m;
}

bool any_contains(const std::vector<std::string>& v, const std::string& what) {
  for (const auto& s : v)
    if (s.find(what) != std::string::npos) return true;
  return false;
}

std::string config_error(const std::string& yaml) {
  auto r = parse_config_text(yaml, "test.yaml");
  REQUIRE_FALSE(r);
  return r.error().message;
}

}  // namespace

TEST_CASE("an SMB plan: mount.cifs with a credentials file, Azure's options and no secret on argv", "[mounts][plan]") {
  StorageConfig storage;
  auto p = plan_mount(files_mount(), storage, kSecrets, kAll, "/var/lib/instanced/mounts");
  REQUIRE(p);
  CHECK(p->driver == "cifs");
  CHECK(p->source == "//wsstorage01.file.core.windows.net/code-391ff5ac");
  CHECK(p->host == "wsstorage01.file.core.windows.net");
  CHECK(p->port == 445);
  REQUIRE(p->argv.size() == 5);
  CHECK(p->argv[0] == "/sbin/mount.cifs");
  CHECK(p->argv[4] ==
        "credentials=/var/lib/instanced/mounts/users.cred,vers=3.1.1,serverino,nosharesock,actimeo=30,mfsymlinks,"
        "uid=1000,gid=1000,dir_mode=0755,file_mode=0644");
  CHECK_FALSE(any_contains(p->argv, kSecrets.key));
  CHECK_FALSE(any_contains(p->precheck_argv, kSecrets.key));
  REQUIRE(p->files.size() == 1);
  CHECK(p->files[0].content == "username=wsstorage01\npassword=" + kSecrets.key + "\n");
  CHECK(p->precheck_argv.front() == "/usr/bin/smbclient");
}

TEST_CASE("an SMB plan follows the endpoint suffix and an explicit endpoint with a port", "[mounts][plan]") {
  StorageConfig storage;
  auto m = files_mount();
  m.endpoint_suffix = "core.chinacloudapi.cn";
  auto p = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(p);
  CHECK(p->host == "wsstorage01.file.core.chinacloudapi.cn");
  m.endpoint = "127.0.0.1:4450";
  m.smb_version = "3.0";
  m.read_only = true;
  m.options = {"cache=strict"};
  p = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(p);
  CHECK(p->source == "//127.0.0.1/code-391ff5ac");
  CHECK(p->port == 4450);
  CHECK_THAT(p->argv[4], Catch::Contains("vers=3.0,") && Catch::EndsWith(",port=4450,ro,cache=strict"));
  auto no_smbclient = kAll;
  no_smbclient.smbclient.clear();
  p = plan_mount(m, storage, kSecrets, no_smbclient, "/s");
  REQUIRE(p);
  CHECK(p->precheck_argv.empty());  // the pre-check is skipped, the mount is not
  auto none = kAll;
  none.mount_cifs.clear();
  auto missing = plan_mount(m, storage, kSecrets, none, "/s");
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Catch::Contains("cifs-utils"));
}

TEST_CASE("an rclone plan: secrets in the environment only, the cache under storage.cache_dir", "[mounts][plan]") {
  StorageConfig storage;
  storage.cache_dir = "/mnt/cache";
  auto m = blob_mount(BlobDriver::rclone);
  m.options = {"dir-cache-time=1s"};
  auto p = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(p);
  CHECK(p->driver == "rclone");
  CHECK(p->stays_running);
  CHECK(p->source == ":azureblob:training-data");
  CHECK(p->fstype == "fuse.rclone");
  CHECK(p->cache_dir == "/mnt/cache/datastore");
  CHECK_FALSE(any_contains(p->argv, kSecrets.key));
  CHECK(any_contains(p->env, "RCLONE_AZUREBLOB_KEY=" + kSecrets.key));
  CHECK(p->argv.back() == "--dir-cache-time=1s");
  CHECK_FALSE(any_contains(p->env, "USE_EMULATOR"));
  m.endpoint = "http://127.0.0.1:10000/devstoreaccount1";  // path-style: the emulator
  p = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(p);
  CHECK(any_contains(p->env, "RCLONE_AZUREBLOB_USE_EMULATOR=true"));
  m.key_file.clear();
  m.sas_file = "/etc/sas";
  p = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(p);
  CHECK(any_contains(p->env, "RCLONE_AZUREBLOB_SAS_URL=http://127.0.0.1:10000/devstoreaccount1/training-data?" + kSecrets.sas));
  CHECK_FALSE(any_contains(p->argv, "SECRETSIG"));
}

TEST_CASE("rclone before 1.54 (Debian 11's 1.53) is not given --devname, which it refuses", "[mounts][plan]") {
  StorageConfig storage;
  auto m = blob_mount(BlobDriver::rclone);
  auto modern = plan_mount(m, storage, kSecrets, kAll, "/s");
  REQUIRE(modern);
  std::vector<std::string> expected{"/usr/bin/rclone", "mount", ":azureblob:training-data", m.mount_point, "--devname",
                                    ":azureblob:training-data", "--allow-other"};
  CHECK(std::vector<std::string>(modern->argv.begin(), modern->argv.begin() + 7) == expected);
  Tools old = kAll;
  old.rclone_devname = false;
  auto p = plan_mount(m, storage, kSecrets, old, "/s");
  REQUIRE(p);
  CHECK(p->argv.size() + 2 == modern->argv.size());
  CHECK(std::find(p->argv.begin(), p->argv.end(), "--devname") == p->argv.end());
  CHECK(p->argv[4] == "--allow-other");
  CHECK(p->source == ":azureblob:training-data");  // what 1.53 puts in mountinfo without the flag
}

TEST_CASE("driver auto: blobfuse2 when installed, else rclone", "[mounts][plan]") {
  auto m = blob_mount(BlobDriver::automatic);
  CHECK(choose_driver(m, kAll) == BlobDriver::blobfuse2);
  auto no_bf = kAll;
  no_bf.blobfuse2.clear();
  CHECK(choose_driver(m, no_bf) == BlobDriver::rclone);
  auto neither = no_bf;
  neither.rclone.clear();
  auto p = plan_mount(m, StorageConfig{}, kSecrets, neither, "/s");
  REQUIRE_FALSE(p);
  CHECK_THAT(p.error().message, Catch::Contains("blobfuse2 is not installed"));
}

// blobfuse2 is not in Debian: the generated file is checked against the schema of its
// documented configuration (setup/baseConfig.yaml in Azure/azure-storage-fuse): known
// top-level keys, known keys per component, the component order it requires.
TEST_CASE("the blobfuse2 configuration follows blobfuse2's documented schema", "[mounts][plan][blobfuse2]") {
  StorageConfig storage;
  storage.cache_dir = "/mnt/instanced/blob-cache";
  auto m = blob_mount(BlobDriver::blobfuse2);
  m.cache_size = ByteSize{2ULL << 30};
  auto p = plan_mount(m, storage, kSecrets, kAll, "/var/lib/instanced/mounts");
  REQUIRE(p);
  CHECK(p->argv == std::vector<std::string>{"/usr/bin/blobfuse2", "mount", "/mnt/datastore",
                                            "--config-file=/var/lib/instanced/mounts/datastore.blobfuse2.yaml"});
  REQUIRE(p->files.size() == 1);
  YAML::Node y = YAML::Load(p->files[0].content);
  const std::map<std::string, std::set<std::string>> schema{
      {"logging", {"type", "level", "file-path"}},
      {"libfuse", {"attribute-expiration-sec", "entry-expiration-sec", "negative-entry-expiration-sec", "default-permission"}},
      {"file_cache", {"path", "timeout-sec", "max-size-mb"}},
      {"attr_cache", {"timeout-sec", "max-size-mb"}},
      {"azstorage", {"type", "account-name", "container", "endpoint", "mode", "account-key", "sas", "appid", "resid", "objid"}}};
  const std::set<std::string> scalars{"foreground", "allow-other", "read-only", "nonempty"};
  for (const auto& kv : y) {
    auto key = kv.first.as<std::string>();
    if (key == "components") continue;
    if (scalars.contains(key)) continue;
    INFO("top-level key " << key);
    REQUIRE(schema.contains(key));
    for (const auto& inner : kv.second) CHECK(schema.at(key).contains(inner.first.as<std::string>()));
  }
  std::vector<std::string> components;
  for (const auto& c : y["components"]) components.push_back(c.as<std::string>());
  CHECK(components == std::vector<std::string>{"libfuse", "file_cache", "attr_cache", "azstorage"});
  CHECK(y["foreground"].as<bool>());
  // The cache on the temp disk with a cap (blobfuse2's default is 80 % of free space).
  CHECK(y["file_cache"]["path"].as<std::string>() == "/mnt/instanced/blob-cache/datastore");
  CHECK(y["file_cache"]["max-size-mb"].as<int>() == 2048);
  CHECK(y["azstorage"]["mode"].as<std::string>() == "key");
  CHECK(y["azstorage"]["account-key"].as<std::string>() == kSecrets.key);
  CHECK(y["azstorage"]["endpoint"].as<std::string>() == "https://wsstorage01.blob.core.windows.net");
  m.key_file.clear();
  m.managed_identity = true;
  m.identity_client_id = "1b6f5e0c-0000-4000-8000-000000000001";
  y = YAML::Load(blobfuse2_config(m, storage, kSecrets));
  CHECK(y["azstorage"]["mode"].as<std::string>() == "msi");
  CHECK(y["azstorage"]["appid"].as<std::string>() == m.identity_client_id);
  CHECK_FALSE(y["azstorage"]["account-key"]);
}

TEST_CASE("helper output is classified: auth, not found, unreachable, no kernel support", "[mounts][plan]") {
  CHECK(classify_output("session setup failed: NT_STATUS_LOGON_FAILURE") == Reason::auth_failed);
  CHECK(classify_output("mount error(13): Permission denied") == Reason::auth_failed);
  CHECK(classify_output("tree connect failed: NT_STATUS_BAD_NETWORK_NAME") == Reason::not_found);
  CHECK(classify_output("mount error(2): No such file or directory") == Reason::not_found);
  CHECK(classify_output("mount error(19): No such device") == Reason::no_kernel_support);
  CHECK(classify_output("mount error(112): Host is down") == Reason::unreachable);
  CHECK(classify_output("ERROR : 403 AuthenticationFailed") == Reason::auth_failed);
  CHECK(classify_output("something else entirely") == Reason::other);
}

TEST_CASE("mountinfo: the entry on top of a mount point, escapes decoded", "[mounts][plan]") {
  const std::string text =
      "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
      "40 22 0:40 / /mnt/my\\040data rw,nosuid - fuse.rclone :azureblob:c rw,user_id=0\n"
      "41 22 0:41 / /mnt/x rw - tmpfs tmpfs rw\n"
      "42 41 0:42 / /mnt/x rw shared:7 master:2 - cifs //h/s rw,vers=3.1.1\n"
      "garbage\n";
  auto entries = parse_mountinfo(text);
  REQUIRE(entries.size() == 4);
  auto e = find_mount(entries, "/mnt/my data");
  REQUIRE(e);
  CHECK(e->fstype == "fuse.rclone");
  CHECK(e->source == ":azureblob:c");
  e = find_mount(entries, "/mnt/x");
  REQUIRE(e);
  CHECK(e->fstype == "cifs");  // the one mounted last
  CHECK_FALSE(find_mount(entries, "/mnt"));
}

TEST_CASE("Shared Key: the emulator's documented example signs as Azure computes it", "[mounts][plan]") {
  // Path-style: the account appears twice in the canonical resource.
  MountConfig m = blob_mount(BlobDriver::rclone);
  m.account = "devstoreaccount1";
  m.container = "data";
  m.endpoint = "http://127.0.0.1:10000/devstoreaccount1";
  auto u = container_url(m);
  REQUIRE(u);
  CHECK_FALSE(u->tls);
  CHECK(u->host == "127.0.0.1");
  CHECK(u->port == "10000");
  CHECK(u->path == "/devstoreaccount1/data");
  CHECK(u->canonical_resource == "/devstoreaccount1/devstoreaccount1/data");
  m.endpoint.clear();
  u = container_url(m);
  REQUIRE(u);
  CHECK(u->host == "devstoreaccount1.blob.core.windows.net");
  CHECK(u->canonical_resource == "/devstoreaccount1/data");
  auto a = shared_key_authorization("acc", "a2V5", "/acc/c", "Fri, 27 Nov 2026 10:00:00 GMT", "2021-08-06");
  REQUIRE(a);
  CHECK_THAT(*a, Catch::StartsWith("SharedKey acc:"));
  CHECK(a->size() == std::string("SharedKey acc:").size() + 44);  // base64 of 32 bytes
  CHECK_FALSE(shared_key_authorization("acc", "not base64!", "/acc/c", "d", "v"));
}

TEST_CASE("storage config: names, credentials and mount points are checked with the mount and field named",
          "[mounts][config]") {
  const std::string head = "storage:\n  mounts:\n";
  auto one = [&](const std::string& fields) { return head + "    - name: m1\n" + fields; };
  const std::string files = "      type: azure-files\n      account: acct01\n      share: myshare\n      key_file: /k\n";
  const std::string blob = "      type: blob\n      account: acct01\n      container: data\n      key_file: /k\n";

  CHECK(parse_config_text(one(files + "      mount_point: /mnt/share\n"), "t"));
  CHECK_THAT(config_error(one("      type: azure-files\n      account: Acct\n      share: myshare\n      key_file: /k\n"
                              "      mount_point: /mnt/s\n")),
             Catch::Contains("mount 'm1': account: 'Acct' may contain only lowercase letters and digits"));
  CHECK_THAT(config_error(one("      type: azure-files\n      account: acct01\n      share: my--share\n      key_file: /k\n"
                              "      mount_point: /mnt/s\n")),
             Catch::Contains("share: 'my--share': a hyphen must be between two letters or digits"));
  CHECK_THAT(config_error(one(files + "      mount_point: /proc/x\n")), Catch::Contains("mount_point: '/proc/x' is inside /proc"));
  CHECK_THAT(config_error(one(files + "      mount_point: relative\n")), Catch::Contains("must be an absolute path"));
  CHECK_THAT(config_error(one(files + "      mount_point: /mnt/a/../b\n")), Catch::Contains("normalised"));
  CHECK_THAT(config_error(one(files + "      mount_point: /mnt/s\n      smb_version: \"2.1\"\n")),
             Catch::Contains("smb_version: '2.1' must be 3.1.1, 3.02 or 3.0"));
  CHECK_THAT(config_error(one(files + "      mount_point: /mnt/s\n      options: [password=hunter2]\n")),
             Catch::Contains("options[0]: credentials must come from key_file or sas_file"));
  CHECK_THAT(config_error(one("      type: blob\n      account: acct01\n      container: data\n      mount_point: /mnt/b\n")),
             Catch::Contains("set exactly one of key_file, sas_file and managed_identity"));
  CHECK_THAT(config_error(one(blob + "      mount_point: /mnt/b\n      endpoint: ftp://x\n")),
             Catch::Contains("must be an http:// or https:// URL"));
  CHECK_THAT(config_error(one(blob + "      mount_point: /mnt/b\n      driver: s3fs\n")), Catch::Contains("driver"));
  CHECK_THAT(config_error(head + "    - name: a\n" + files + "      mount_point: /mnt/s\n    - name: b\n" + blob +
                          "      mount_point: /mnt/s/inner\n"),
             Catch::Contains("mounts[1]: mount_point '/mnt/s/inner' is inside mounts[0]'s '/mnt/s'"));
  CHECK_THAT(config_error(head + "    - name: a\n" + files + "      mount_point: /mnt/s\n    - name: a\n" + blob +
                          "      mount_point: /mnt/t\n"),
             Catch::Contains("'a' is already used by mounts[0]"));
  // The error names the file and line.
  CHECK_THAT(config_error(one(files + "      mount_point: /mnt/s\n      uid: -1\n")), Catch::Contains("test.yaml:") && Catch::Contains("uid"));
}
