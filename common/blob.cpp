#include "common/blob.hpp"

#include <fmt/format.h>

#include "common/text.hpp"

namespace instanced::blob {

std::string answered(unsigned status, std::string_view reason, std::string_view error_code) {
  return fmt::format("the Blob service answered {} {}{}{}", status, escape_for_log(reason),
                     error_code.empty() ? "" : ": ", escape_for_log(error_code));
}

}  // namespace instanced::blob
