// What the agent's two clients of Azure's Blob service share (the mounts' access check and
// the diagnostics upload): the REST API version they speak, and how an error answer reads.
#pragma once

#include <string>
#include <string_view>

namespace instanced::blob {

// The x-ms-version header of every request.
inline constexpr const char* kApiVersion = "2021-08-06";

// "the Blob service answered 403 Forbidden: AuthenticationFailed": the status, its reason
// and the x-ms-error-code header (left out when empty), escaped for a log.
std::string answered(unsigned status, std::string_view reason, std::string_view error_code);

}  // namespace instanced::blob
