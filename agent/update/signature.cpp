#include "agent/update/signature.hpp"

#include <fmt/format.h>
#include <memory>
#include <openssl/evp.h>

#include "common/text.hpp"

namespace instanced::update {

namespace {
struct PkeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
struct MdCtxFree {
  void operator()(EVP_MD_CTX* c) const { EVP_MD_CTX_free(c); }
};

// Ed25519 is "pure": the whole text goes to one EVP_DigestVerify, no digest of its own.
bool made_by(std::string_view text, const std::string& signature, const std::string& key) {
  std::unique_ptr<EVP_PKEY, PkeyFree> pkey(EVP_PKEY_new_raw_public_key(
      EVP_PKEY_ED25519, nullptr, reinterpret_cast<const unsigned char*>(key.data()), key.size()));
  std::unique_ptr<EVP_MD_CTX, MdCtxFree> ctx(EVP_MD_CTX_new());
  if (!pkey || !ctx || EVP_DigestVerifyInit(ctx.get(), nullptr, nullptr, nullptr, pkey.get()) != 1) return false;
  return EVP_DigestVerify(ctx.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                          reinterpret_cast<const unsigned char*>(text.data()), text.size()) == 1;
}
}  // namespace

std::string signed_text(std::string_view version, std::string_view sha256) {
  return fmt::format("instanced-update {} sha256:{}", version, sha256);
}

Result<std::size_t> verify(std::string_view text, std::string_view signature, const std::vector<std::string>& keys) {
  auto sig = base64_decoded(signature);
  if (!sig || sig->size() != 64) return Error{"signature: not base64 of 64 bytes (an Ed25519 signature)"};
  if (keys.empty()) return Error{"update.public_keys is empty: no signature can be checked"};
  for (std::size_t i = 0; i < keys.size(); ++i) {
    auto key = base64_decoded(keys[i]);
    if (key && key->size() == 32 && made_by(text, *sig, *key)) return i;
  }
  return Error{fmt::format("signature: made by none of the {} key(s) in update.public_keys", keys.size())};
}

}  // namespace instanced::update
