// What every outbound TLS connection of the agent shares: where trusted CAs come from, and
// which TLS library the agent runs with (statically linked in the portable build).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <string>
#include <string_view>

#include "common/result.hpp"

namespace instanced::tls {

// Debian's and Ubuntu's CA store: hashed certificates, one file each, read on demand.
inline constexpr const char* kSystemCaDirectory = "/etc/ssl/certs";

// Trust the system's CA store: OpenSSL's own defaults (its OPENSSLDIR, /usr/lib/ssl in the
// portable build, and SSL_CERT_FILE / SSL_CERT_DIR), then kSystemCaDirectory, so that the
// store is found whatever OPENSSLDIR the library was built with.
void use_system_ca_store(boost::asio::ssl::context& ctx);

// What every outbound client context shares: TLS 1.2 or later, the peer verified against
// `ca_file`, or the system's CA store when it is empty. Error: "KEY PATH: why" (the file
// cannot be read or holds no certificate; `key` names the setting, "control.ca_file").
Result<void> verify_peers(boost::asio::ssl::context& ctx, const std::string& ca_file = {}, std::string_view key = {});

// The names a certificate is for: "DNS:cp.example.net, IP:10.0.0.4" (its subjectAltName),
// or "CN=cp.example.net" when it has none. For messages that say why a name did not match.
std::string certificate_names(X509* cert);

// "OpenSSL 3.5.7 30 Sep 2025": the library in use, not the headers built against.
std::string library_version();

}  // namespace instanced::tls
