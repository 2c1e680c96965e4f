// The one proxy setting: which hosts take it, its credentials, the drivers' environment.
#include <catch2/catch.hpp>
#include <cstdlib>
#include <sys/stat.h>

#include "common/proxy.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using instanced::testing::TempDir;

namespace {

// The environment's proxy variables unset for the test, put back after it.
struct NoProxyEnvironment {
  NoProxyEnvironment() {
    for (const char* n : kNames)
      if (const char* v = std::getenv(n)) saved.emplace_back(n, v);
    for (const char* n : kNames) ::unsetenv(n);
  }
  ~NoProxyEnvironment() {
    for (const char* n : kNames) ::unsetenv(n);
    for (const auto& [n, v] : saved) ::setenv(n.c_str(), v.c_str(), 1);
  }
  static constexpr const char* kNames[] = {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "no_proxy", "NO_PROXY"};
  std::vector<std::pair<std::string, std::string>> saved;
};

bool has(const std::vector<std::string>& env, const std::string& entry) {
  return std::find(env.begin(), env.end(), entry) != env.end();
}

}  // namespace

TEST_CASE("no_proxy: names with their subdomains, dotted suffixes, addresses, everything", "[common][proxy]") {
  const std::vector<std::string> list{"localhost", " .internal.example ", "10.1.2.3", "blob.core.windows.net"};
  CHECK(host_in("localhost", list));
  CHECK(host_in("cp.internal.example", list));
  CHECK(host_in("internal.example", list));
  CHECK(host_in("10.1.2.3", list));
  CHECK(host_in("acct.blob.core.windows.net", list));
  CHECK_FALSE(host_in("notinternal.example", list));
  CHECK_FALSE(host_in("10.1.2.30", list));
  CHECK(host_in("CP.Internal.Example", list));  // names are not case-sensitive
  CHECK(host_in("anything", {"*"}));
  CHECK_FALSE(host_in("anything", {}));
}

TEST_CASE("proxy.url for every host but the no_proxy ones, with its credentials", "[common][proxy]") {
  NoProxyEnvironment clean;
  TempDir dir;
  ProxyConfig c;
  CHECK_FALSE(*proxy_for("cp.example.net", true, c));  // nothing configured, nothing in the environment
  c.url = "http://proxy.corp:3128";
  auto p = proxy_for("cp.example.net", true, c);
  REQUIRE(p.ok());
  REQUIRE(*p);
  CHECK((*p)->host == "proxy.corp");
  CHECK((*p)->authorization.empty());
  // The defaults: loopback and the metadata service directly.
  CHECK_FALSE(*proxy_for("127.0.0.1", false, c));
  CHECK_FALSE(*proxy_for("169.254.169.254", false, c));
  c.no_proxy = {};
  CHECK(*proxy_for("127.0.0.1", false, c));

  dir.write("creds", "proxy-user:pa:ss w\n");
  ::chmod((dir / "creds").c_str(), 0600);
  c.credentials_file = (dir / "creds").string();
  p = proxy_for("cp.example.net", true, c);
  REQUIRE(p.ok());
  CHECK((*p)->authorization.reveal() == "Basic cHJveHktdXNlcjpwYTpzcyB3");  // base64("proxy-user:pa:ss w")
  ::chmod((dir / "creds").c_str(), 0644);
  CHECK_THAT(proxy_for("cp.example.net", true, c).error().message, Catch::Contains("chmod 600"));
  dir.write("creds", "no-colon\n");
  ::chmod((dir / "creds").c_str(), 0600);
  CHECK_THAT(proxy_for("cp.example.net", true, c).error().message, Catch::Contains("must be user:password"));

  c.credentials_file.clear();
  c.url = "http://u:secret@p:1";
  CHECK_THAT(proxy_for("x", true, c).error().message, Catch::Contains("proxy.credentials_file, not in the URL"));
  c.url = "socks5://p:1";
  CHECK_THAT(proxy_for("x", true, c).error().message, Catch::Contains("only http:// proxies"));
}

TEST_CASE("without proxy.url: the environment's proxy, its no_proxy and its credentials", "[common][proxy]") {
  NoProxyEnvironment clean;
  ::setenv("https_proxy", "http://env-user:env-pass@envproxy:8080", 1);
  ::setenv("no_proxy", "skip.example", 1);
  ProxyConfig c;
  auto p = proxy_for("cp.example.net", true, c);
  REQUIRE(p.ok());
  REQUIRE(*p);
  CHECK((*p)->host == "envproxy");
  CHECK((*p)->authorization.reveal() == "Basic ZW52LXVzZXI6ZW52LXBhc3M=");
  CHECK_FALSE(*proxy_for("a.skip.example", true, c));
  CHECK_FALSE(*proxy_for("cp.example.net", false, c));  // http: http_proxy, unset
  auto env = proxy_environment(c);
  REQUIRE(env.ok());
  CHECK(has(*env, "https_proxy=http://env-user:env-pass@envproxy:8080"));
  // The environment's list, and proxy.no_proxy's (the metadata service) always.
  CHECK(has(*env, "no_proxy=skip.example,localhost,127.0.0.1,::1,169.254.169.254"));
}

TEST_CASE("the drivers' environment: proxy.url with its credentials percent-encoded, and no_proxy",
          "[common][proxy]") {
  NoProxyEnvironment clean;
  TempDir dir;
  dir.write("creds", "proxy user:p@ss/word\n");
  ::chmod((dir / "creds").c_str(), 0600);
  ProxyConfig c;
  CHECK(proxy_environment(c)->empty());
  c.url = "http://10.0.0.1:3128";
  c.credentials_file = (dir / "creds").string();
  auto env = proxy_environment(c);
  REQUIRE(env.ok());
  for (const char* name : {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"})
    CHECK(has(*env, std::string(name) + "=http://proxy%20user:p%40ss%2Fword@10.0.0.1:3128"));
  CHECK(has(*env, "NO_PROXY=localhost,127.0.0.1,::1,169.254.169.254"));
}
