#include <boost/json/parse.hpp>
#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "agent/control/backoff.hpp"
#include "agent/control/protocol.hpp"

using namespace instanced;
using namespace instanced::control;

TEST_CASE("messages round-trip through the envelope", "[control][protocol]") {
  Message m{"event", "abc123", 42, "2026-11-27T12:00:00.000Z", {{"subsystem", "disk"}, {"type", "state_changed"}}};
  auto text = encode(m);
  CHECK(text == R"({"v":1,"type":"event","id":"abc123","seq":42,"ts":"2026-11-27T12:00:00.000Z","body":{"subsystem":"disk","type":"state_changed"}})");
  auto back = decode(text, Limits{});
  REQUIRE(back.ok());
  CHECK(back->type == "event");
  CHECK(*back->seq == 42);
  CHECK(back->body.at("subsystem") == "disk");
}

TEST_CASE("decoding refuses bad messages and says what is wrong", "[control][protocol]") {
  Limits small{200, 4};
  CHECK_THAT(decode(std::string(300, ' '), small).error().message, Catch::Contains("300 bytes exceeds the limit of 200"));
  CHECK_THAT(decode(R"({"v":1,"type":"x","id":"i","body":{"a":{"b":{"c":{"d":1}}}}})", small).error().message,
             Catch::Contains("nested deeper than 4"));
  CHECK_THAT(decode("{not json", Limits{}).error().message, Catch::Contains("not valid JSON"));
  CHECK(decode("[1,2]", Limits{}).error().message == "message is not a JSON object");
  CHECK(decode(R"({"v":2,"type":"x","id":"i","body":{}})", Limits{}).error().message == "v: expected 1");
  CHECK(decode(R"({"v":1,"id":"i","body":{}})", Limits{}).error().message == "type: missing or not a string");
  CHECK(decode(R"({"v":1,"type":"x","id":"i","seq":-1,"body":{}})", Limits{}).error().message ==
        "seq: must be a non-negative integer");
  CHECK(decode(R"({"v":1,"type":"x","id":"i","body":[]})", Limits{}).error().message == "body: missing or not an object");
  // A number beyond a double's range would come back as infinity, which no JSON writer can
  // encode: refused, with where it was (found by control_message_fuzz).
  CHECK(decode(R"({"v":1,"type":"command","id":"i","body":{"name":"p","args":{"n":[1,-7e8562]}}})", Limits{}).error().message ==
        "body.args.n[1]: number out of range");
  CHECK(decode(R"({"v":1,"type":"x","id":"i","body":{"x":1e308}})", Limits{}).ok());
}

TEST_CASE("commands are read from command messages", "[control][protocol]") {
  auto m = decode(R"({"v":1,"type":"command","id":"c-1","ts":"t","body":{"name":"ping","args":{"x":1},"deadline":"2026-11-27T12:00:00Z"}})",
                  Limits{});
  REQUIRE(m.ok());
  auto c = command_of(*m);
  REQUIRE(c.ok());
  CHECK(c->id == "c-1");
  CHECK(c->name == "ping");
  CHECK(c->args.at("x") == 1);
  CHECK(*c->deadline == "2026-11-27T12:00:00Z");
  auto bad = decode(R"({"v":1,"type":"command","id":"c-2","body":{"name":"ping","args":[1]}})", Limits{});
  CHECK(command_of(*bad).error().message == "body.args: not an object");
  auto noname = decode(R"({"v":1,"type":"command","id":"c-3","body":{}})", Limits{});
  CHECK(command_of(*noname).error().message == "body.name: missing or not a string");
}

TEST_CASE("backoff: full jitter under a doubling cap, reset on request", "[control][backoff]") {
  using namespace std::chrono_literals;
  Backoff b(1s, 300s, 42);
  std::int64_t caps[] = {1000, 2000, 4000, 8000, 16000, 32000, 64000, 128000, 256000, 300000, 300000};
  for (auto cap : caps) {
    auto d = b.next();
    CHECK(d.count() >= 0);
    CHECK(d.count() <= cap);
  }
  // Full jitter spreads: over many draws at the cap, the mean is near half of it.
  double sum = 0;
  for (int i = 0; i < 2000; ++i) sum += static_cast<double>(b.next().count());
  CHECK(sum / 2000 == Approx(150000).epsilon(0.1));
  b.reset();
  CHECK(b.next().count() <= 1000);
}

TEST_CASE("every example in docs/protocol.md decodes", "[control][protocol][docs]") {
  // The same examples, one per file, seed the control_message fuzz target.
  std::ifstream in(std::string(TEST_SOURCE_DIR) + "/../docs/protocol.md");
  std::stringstream ss;
  ss << in.rdbuf();
  const std::string doc = ss.str();
  int n = 0;
  for (auto pos = doc.find("```json\n"); pos != std::string::npos; pos = doc.find("```json\n", pos)) {
    pos += 8;
    auto end = doc.find("```", pos);
    std::string example;
    std::istringstream lines(doc.substr(pos, end - pos));
    for (std::string line; std::getline(lines, line);) {
      auto first = line.find_first_not_of(' ');
      if (first != std::string::npos) example += (example.empty() ? "" : " ") + line.substr(first);
    }
    auto m = decode(example, Limits{});
    INFO(example);
    CHECK(m.ok());
    ++n;
    pos = end;
  }
  CHECK(n >= 7);
}

#include "agent/control/channel.hpp"

TEST_CASE("endpoints and proxies are parsed, no_proxy honoured", "[control][proxy]") {
  auto ep = parse_endpoint("wss://cp.example.net:8443/v1/agent", false);
  REQUIRE(ep.ok());
  CHECK(ep->host == "cp.example.net");
  CHECK(ep->port == "8443");
  CHECK(ep->target == "/v1/agent");
  CHECK(parse_endpoint("wss://cp.example.net", false)->port == "443");
  CHECK_THAT(parse_endpoint("ws://x/y", false).error().message, Catch::Contains("needs control.insecure: true"));
  CHECK_THAT(parse_endpoint("https://x/y", false).error().message, Catch::Contains("must start with wss://"));

  ::unsetenv("HTTPS_PROXY");
  ::setenv("https_proxy", "http://proxy.corp:3128", 1);
  ::setenv("no_proxy", "localhost, .internal.example", 1);
  const instanced::ProxyConfig none;
  auto p = channel_proxy(*ep, "", none);
  REQUIRE(p.ok());
  REQUIRE(*p);
  CHECK((*p)->host == "proxy.corp");
  CHECK((*p)->port == "3128");
  auto internal = parse_endpoint("wss://cp.internal.example/v1", false);
  CHECK_FALSE(*channel_proxy(*internal, "", none));  // no_proxy suffix
  CHECK((*channel_proxy(*internal, "http://explicit:8080", none))->host == "explicit");  // control.proxy wins
  instanced::ProxyConfig configured;
  configured.url = "http://site-proxy:3128";
  CHECK((*channel_proxy(*ep, "", configured))->host == "site-proxy");  // proxy.url over the environment
  CHECK_THAT(channel_proxy(*ep, "socks5://x:1", none).error().message, Catch::Contains("only http:// proxies"));
  CHECK((*channel_proxy(*ep, "proxy.corp:3128", none))->port == "3128");  // no scheme: http://
  CHECK((*channel_proxy(*ep, "http://[fd00::1]:3128", none))->host == "fd00::1");
  CHECK((*channel_proxy(*ep, "http://[fd00::1]:3128", none))->port == "3128");
  CHECK(parse_endpoint("wss://[::1]:8443/v1", false)->port == "8443");
  CHECK(parse_endpoint("wss://u:p@cp/v1", false).error().message ==
        "control.endpoint: a user or password in the URL is not supported");
  ::unsetenv("https_proxy");
  ::unsetenv("no_proxy");
  CHECK_FALSE(*channel_proxy(*ep, "", none));
}
