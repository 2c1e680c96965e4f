#include <catch2/catch.hpp>

#include "common/units.hpp"

using namespace instanced;
using namespace std::chrono_literals;

TEST_CASE("sizes parse in binary and decimal units", "[units]") {
  CHECK(parse_size("5GiB")->bytes == 5ULL << 30);
  CHECK(parse_size("512MiB")->bytes == 512ULL << 20);
  CHECK(parse_size("10GB")->bytes == 10'000'000'000ULL);
  CHECK(parse_size("1kB")->bytes == 1000);
  CHECK(parse_size(" 42 ")->bytes == 42);
  CHECK(parse_size("7 B")->bytes == 7);
  CHECK_FALSE(parse_size("5gib").ok());
  CHECK_FALSE(parse_size("GiB").ok());
  CHECK_FALSE(parse_size("-1GiB").ok());
  CHECK_FALSE(parse_size("99999999999TiB").ok());
  CHECK_THAT(parse_size("3 furlongs").error().message, Catch::Contains("invalid size unit 'furlongs'"));
}

TEST_CASE("durations parse with units, compound too", "[units]") {
  CHECK(*parse_duration("30s") == 30s);
  CHECK(*parse_duration("15m") == 15min);
  CHECK(*parse_duration("1h30m") == 90min);
  CHECK(*parse_duration("250ms") == 250ms);
  CHECK(*parse_duration("2d") == 48h);
  CHECK_THAT(parse_duration("30").error().message, Catch::Contains("needs a unit"));
  CHECK_FALSE(parse_duration("").ok());
  CHECK_FALSE(parse_duration("5 fortnights").ok());
  CHECK_FALSE(parse_duration("99999999999999999d").ok());
}

TEST_CASE("formatting round-trips", "[units]") {
  for (auto s : {"0B", "1KiB", "5GiB", "1000B", "3TiB"}) CHECK(format_size(*parse_size(s)) == s);
  for (auto d : {"0s", "90s", "15m", "1h", "250ms", "2d"}) {
    auto parsed = parse_duration(d);
    CHECK(*parse_duration(format_duration(*parsed)) == *parsed);
  }
  CHECK(format_duration(90s) == "90s");
  CHECK(human_size(5ULL << 30) == "5.0 GiB");
  CHECK(human_size(12) == "12 B");
}
