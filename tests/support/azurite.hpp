// Azurite's Blob service (from npm) as a test fixture: started on a free loopback port with
// its data in the test's folder; rclone as an independent Blob client; service SAS tokens
// signed with the emulator's well-known key, as the Blob service checks them.
#pragma once

#include <catch2/catch.hpp>
#include <csignal>
#include <filesystem>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string>
#include <sys/wait.h>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

// Azurite's well-known development account key (documented, not a secret).
inline const std::string kAccount = "devstoreaccount1";
inline const std::string kKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

// Azurite's Blob service on a free loopback port, its data in the test's folder.
class Azurite {
 public:
  explicit Azurite(const TempDir& dir) : dir_(dir) {}
  ~Azurite() { stop(); }
  static std::string binary() {
    if (const char* e = std::getenv("AZURITE_BLOB")) return e;
    return "/var/cache/instanced-test/npm/node_modules/.bin/azurite-blob";
  }
  void start() {
    if (port == 0) port = free_port();
    std::filesystem::create_directories(dir_ / "azurite");
    REQUIRE(std::filesystem::exists(binary()));
    const std::size_t logged = slurp(dir_ / "azurite.log").size();  // a restart appends to the log
    pid_ = spawn({binary(), "--blobHost", host, "--blobPort", std::to_string(port), "--location",
                  (dir_ / "azurite").string(), "--skipApiVersionCheck", "--loose", "--disableTelemetry"},
                 (dir_ / "azurite.log").string());
    REQUIRE(eventually([&] { return slurp(dir_ / "azurite.log").find("successfully listens", logged) != std::string::npos; }, 30s));
  }
  void stop() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  std::string endpoint() const { return fmt::format("http://{}:{}/{}", host, port, kAccount); }
  // rclone as an independent Blob REST client (not the mount).
  CommandResult rclone(const std::string& args) const {
    return run_command(fmt::format(
        "RCLONE_CONFIG=/dev/null RCLONE_AZUREBLOB_ACCOUNT={} RCLONE_AZUREBLOB_KEY='{}' RCLONE_AZUREBLOB_ENDPOINT={} "
        "RCLONE_AZUREBLOB_USE_EMULATOR=true rclone {} 2>&1",
        kAccount, kKey, endpoint(), args));
  }
  int port = 0;
  std::string host = "127.0.0.1";  // the address it listens on

 private:
  const TempDir& dir_;
  pid_t pid_ = -1;
};

// A container SAS (sr=c, the 2015-04-05 string to sign that every service version still
// takes), its query string without '?': "sv=…&sr=c&sp=…&se=…&sig=…". `sign_with` another key
// makes one the service refuses (403 AuthenticationFailed).
inline std::string container_sas(const std::string& container, const std::string& permissions,
                                 const std::string& sign_with = kKey) {
  const std::string version = "2017-07-29", expiry = "2099-01-01T00:00:00Z";
  const std::string to_sign = fmt::format("{}\n\n{}\n/blob/{}/{}\n\n\n\n{}\n\n\n\n\n", permissions, expiry, kAccount,
                                          container, version);
  std::string raw(sign_with.size(), '\0');
  int n = EVP_DecodeBlock(reinterpret_cast<unsigned char*>(raw.data()),
                          reinterpret_cast<const unsigned char*>(sign_with.data()), static_cast<int>(sign_with.size()));
  raw.resize(static_cast<std::size_t>(n) - (sign_with.ends_with("==") ? 2 : sign_with.ends_with("=") ? 1 : 0));
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), raw.data(), static_cast<int>(raw.size()), reinterpret_cast<const unsigned char*>(to_sign.data()),
       to_sign.size(), mac, &mac_len);
  std::string sig(4 * ((mac_len + 2) / 3) + 1, '\0');
  sig.resize(static_cast<std::size_t>(EVP_EncodeBlock(reinterpret_cast<unsigned char*>(sig.data()), mac, static_cast<int>(mac_len))));
  std::string encoded;  // '+', '/' and '=' percent-encoded
  for (char c : sig) encoded += c == '+' ? "%2B" : c == '/' ? "%2F" : c == '=' ? "%3D" : std::string(1, c);
  return fmt::format("sv={}&sr=c&sp={}&se={}&sig={}", version, permissions, expiry, encoded);
}

}  // namespace instanced::testing
