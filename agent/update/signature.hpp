// The package's signature (docs/update.md): Ed25519 over the text
// "instanced-update VERSION sha256:HEX", so that one signature binds the version and the
// package's bytes, and is checked before anything is downloaded.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.hpp"

namespace instanced::update {

// What is signed for `version` and the package's SHA-256 (64 lowercase hex digits).
std::string signed_text(std::string_view version, std::string_view sha256);

// Which of `keys` (base64 of 32 bytes each) made `signature` (base64 of 64 bytes) over
// `text`: its index. Errors: "signature: not base64 of 64 bytes", "signature: made by none
// of the 2 keys in update.public_keys".
Result<std::size_t> verify(std::string_view text, std::string_view signature, const std::vector<std::string>& keys);

}  // namespace instanced::update
