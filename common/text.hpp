// Text from the outside world (script and job output) made safe for the journal and JSON,
// and for a URL; base64.
#pragma once

#include <optional>
#include <string>
#include <string_view>

namespace instanced {

// Valid UTF-8 is kept; every byte of an invalid sequence and every control character but
// tab is written as \xNN, so a line is printable and a JSON string can hold it.
std::string escape_for_log(std::string_view bytes);

// RFC 3986 percent-encoding: every byte but the unreserved characters (letters, digits,
// "-", "_", ".", "~") as %XX, for a user or password in a URL.
std::string percent_encoded(std::string_view bytes);

// Base64 (RFC 4648, with padding), and back: nothing for text that is not base64 (a
// length not a multiple of 4, a character outside the alphabet, padding inside).
std::string base64_encoded(std::string_view bytes);
std::optional<std::string> base64_decoded(std::string_view text);

}  // namespace instanced
