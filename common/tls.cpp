#include "common/tls.hpp"

#include <arpa/inet.h>
#include <fmt/format.h>
#include <openssl/crypto.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <string>
#include <vector>

namespace instanced::tls {

void use_system_ca_store(boost::asio::ssl::context& ctx) {
  // Not there is no error either: a peer's certificate then fails verification, which says so.
  boost::system::error_code ignored;
  ctx.set_default_verify_paths(ignored);
  // A missing folder is no error here: the defaults above may be all there is.
  SSL_CTX_load_verify_locations(ctx.native_handle(), nullptr, kSystemCaDirectory);
}

std::string library_version() { return OpenSSL_version(OPENSSL_VERSION); }

Result<void> verify_peers(boost::asio::ssl::context& ctx, const std::string& ca_file, std::string_view key) {
  SSL_CTX_set_min_proto_version(ctx.native_handle(), TLS1_2_VERSION);
  ctx.set_verify_mode(boost::asio::ssl::verify_peer);
  if (ca_file.empty()) {
    use_system_ca_store(ctx);
    return {};
  }
  boost::system::error_code ec;
  ctx.load_verify_file(ca_file, ec);
  if (ec) return Error{fmt::format("{} {}: {}", key, ca_file, ec.message())};
  return {};
}

std::string certificate_names(X509* cert) {
  if (!cert) return "no certificate";
  std::vector<std::string> names;
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert, NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans); ++i) {
    const GENERAL_NAME* n = sk_GENERAL_NAME_value(sans, i);
    if (n->type == GEN_DNS) {
      const auto* s = n->d.dNSName;
      names.push_back("DNS:" + std::string(reinterpret_cast<const char*>(ASN1_STRING_get0_data(s)),
                                           static_cast<std::size_t>(ASN1_STRING_length(s))));
    } else if (n->type == GEN_IPADD) {
      const auto* s = n->d.iPAddress;
      char text[INET6_ADDRSTRLEN] = {};
      const int family = ASN1_STRING_length(s) == 4 ? AF_INET : AF_INET6;
      if (inet_ntop(family, ASN1_STRING_get0_data(s), text, sizeof text)) names.push_back(std::string("IP:") + text);
    }
  }
  GENERAL_NAMES_free(sans);
  if (names.empty()) {
    char cn[256] = {};
    if (X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn) > 0)
      names.push_back(std::string("CN=") + cn);
  }
  if (names.empty()) return "no name";
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : ", ") + n;
  return out;
}

}  // namespace instanced::tls
