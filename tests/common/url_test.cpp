// URLs the agent connects to (common/url.hpp, Boost.URL underneath): the parts a client
// needs, the errors a configuration gets, and what the hand-written parser got wrong.
#include <catch2/catch.hpp>

#include "common/url.hpp"

using namespace instanced;

TEST_CASE("urls: scheme, host, port and target", "[url]") {
  auto u = parse_url("wss://cp.example.net:8443/v1/agent?x=1");
  REQUIRE(u.ok());
  CHECK(u->scheme == "wss");
  CHECK(u->tls);
  CHECK(u->host == "cp.example.net");
  CHECK(u->port == "8443");
  CHECK(u->target == "/v1/agent?x=1");
  CHECK(u->authority() == "cp.example.net:8443");
  CHECK(u->shown() == "wss://cp.example.net:8443/v1/agent");
  CHECK_FALSE(u->user);

  CHECK(parse_url("https://h")->port == "443");
  CHECK(parse_url("https://h")->target == "/");
  CHECK(parse_url("ws://h/")->port == "80");
  CHECK_FALSE(parse_url("http://h")->tls);
  CHECK(parse_url("HTTP://h:1/")->scheme == "http");
}

TEST_CASE("urls: an IPv6 literal keeps its port and loses its brackets for connecting", "[url]") {
  auto u = parse_url("https://[::1]:8443/x");
  REQUIRE(u.ok());
  CHECK(u->host == "::1");
  CHECK(u->port == "8443");  // the hand-written parser said 443
  CHECK(u->authority() == "[::1]:8443");
  CHECK(parse_url("http://[fe80::1]/")->port == "80");
  CHECK(host_port("::1", "80") == "[::1]:80");
  CHECK(host_port("10.0.0.1", "80") == "10.0.0.1:80");
}

TEST_CASE("urls: userinfo is refused unless asked for, and never repeated in an error", "[url]") {
  auto refused = parse_url("https://alice:s3cret@h/");
  REQUIRE_FALSE(refused.ok());
  CHECK(refused.error().message == "a user or password in the URL is not supported");
  auto allowed = parse_url("http://alice:p%40ss@proxy:3128", true);
  REQUIRE(allowed.ok());
  CHECK(*allowed->user == "alice");
  CHECK(allowed->password == "p@ss");
  CHECK(allowed->host == "proxy");
  CHECK(parse_url("https://bob:pw@h/blob?sig=abc", true)->shown() == "https://h:443/blob");
  auto bad = parse_url("ftp://alice:s3cret@h/");
  REQUIRE_FALSE(bad.ok());
  CHECK(bad.error().message.find("s3cret") == std::string::npos);
  CHECK(bad.error().message == "'ftp://***@h/' is not an http(s):// or ws(s):// URL");
}

TEST_CASE("urls: errors name what is wrong", "[url]") {
  CHECK(parse_url("ftp://x").error().message == "'ftp://x' is not an http(s):// or ws(s):// URL");
  CHECK(parse_url("cp.example.net").error().message == "'cp.example.net' is not an http(s):// or ws(s):// URL");
  CHECK(parse_url("https://:1/").error().message == "'https://:1/' has no host");
  CHECK(parse_url("http://h:99999/").error().message == "'http://h:99999/' has an invalid port");
  CHECK(parse_url("http://h:0/").error().message == "'http://h:0/' has an invalid port");
  CHECK(parse_url("http://h:x/").error().message == "'http://h:x/' has an invalid port");
  CHECK(parse_url("https://h /").error().message == "'https://h /' is not an http(s):// or ws(s):// URL");
}
