#include <catch2/catch.hpp>

#include "agent/daemon/cli.hpp"

using namespace instanced;

TEST_CASE("the command line", "[daemon][cli]") {
  SECTION("defaults") {
    auto o = parse_command_line({});
    REQUIRE(o.ok());
    CHECK(o->config_file == "/etc/instanced/instanced.yaml");
    CHECK_FALSE(o->check_config);
    CHECK_FALSE(o->log_level);
  }
  SECTION("every flag, both spellings of values") {
    auto o = parse_command_line({"--config", "/x.yaml", "--check-config", "--log-level=debug", "--version"});
    REQUIRE(o.ok());
    CHECK(o->config_file == "/x.yaml");
    CHECK(o->check_config);
    CHECK(o->version);
    CHECK(*o->log_level == LogLevel::debug);
  }
  SECTION("errors") {
    CHECK(parse_command_line({"--frobnicate"}).error().message == "unknown argument '--frobnicate'");
    CHECK(parse_command_line({"--config"}).error().message == "--config needs a value");
    CHECK_THAT(parse_command_line({"--log-level", "loud"}).error().message, Catch::Contains("'loud' is not one of"));
    CHECK(parse_command_line({"--version=1"}).error().message == "--version takes no value");
    CHECK_FALSE(parse_command_line({"stray"}).ok());
  }
}
