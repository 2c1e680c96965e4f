// What every outbound TLS connection of the agent shares: where trusted CAs come from, and
// which TLS library the agent runs with (statically linked in the portable build).
#pragma once

#include <boost/asio/ssl/context.hpp>
#include <string>

namespace instanced::tls {

// Debian's and Ubuntu's CA store: hashed certificates, one file each, read on demand.
inline constexpr const char* kSystemCaDirectory = "/etc/ssl/certs";

// Trust the system's CA store: OpenSSL's own defaults (its OPENSSLDIR, /usr/lib/ssl in the
// portable build, and SSL_CERT_FILE / SSL_CERT_DIR), then kSystemCaDirectory, so that the
// store is found whatever OPENSSLDIR the library was built with.
void use_system_ca_store(boost::asio::ssl::context& ctx);

// The names a certificate is for: "DNS:cp.example.net, IP:10.0.0.4" (its subjectAltName),
// or "CN=cp.example.net" when it has none. For messages that say why a name did not match.
std::string certificate_names(X509* cert);

// "OpenSSL 3.5.7 30 Sep 2025": the library in use, not the headers built against.
std::string library_version();

}  // namespace instanced::tls
