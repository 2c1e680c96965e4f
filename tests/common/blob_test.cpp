// What the Blob service's two clients share (common/blob.hpp): how an error answer reads.
#include <catch2/catch.hpp>

#include "common/blob.hpp"

using namespace instanced;

TEST_CASE("blob: an error answer names the status, its reason and the service's error code", "[blob]") {
  CHECK(blob::answered(403, "Forbidden", "AuthenticationFailed") ==
        "the Blob service answered 403 Forbidden: AuthenticationFailed");
  CHECK(blob::answered(503, "Service Unavailable", "") == "the Blob service answered 503 Service Unavailable");
  // What a hostile or broken peer sends is escaped before it reaches a log line.
  CHECK(blob::answered(400, "Bad\nRequest", "Code\x1b[31m") == "the Blob service answered 400 Bad\\x0aRequest: Code\\x1b[31m");
}
