#include "common/tls.hpp"

#include <openssl/crypto.h>
#include <openssl/ssl.h>

namespace instanced::tls {

void use_system_ca_store(boost::asio::ssl::context& ctx) {
  ctx.set_default_verify_paths();
  // A missing folder is no error here: the defaults above may be all there is.
  SSL_CTX_load_verify_locations(ctx.native_handle(), nullptr, kSystemCaDirectory);
}

std::string library_version() { return OpenSSL_version(OPENSSL_VERSION); }

}  // namespace instanced::tls
