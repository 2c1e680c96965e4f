// Schedules: crontab(5) syntax, time zones from the system's tzdata, and the daylight
// saving edges (a skipped hour fires at the jump, a repeated hour fires once).
#include <catch2/catch.hpp>

#include "common/clock.hpp"
#include "common/cron.hpp"

using namespace instanced;
using cron::TimePoint;

namespace {

TimePoint at(const char* iso) {
  auto t = parse_iso8601(iso);
  REQUIRE(t);
  return *t;
}

std::string next(const char* expr, const char* zone, const char* after) {
  auto s = cron::parse(expr);
  REQUIRE(s);
  auto z = cron::TimeZone::locate(zone);
  REQUIRE(z);
  auto n = cron::next_after(*s, *z, at(after));
  return n ? iso8601(*n) : std::string("never");
}

std::string error_of(const char* expr) {
  auto s = cron::parse(expr);
  REQUIRE_FALSE(s);
  return s.error().message;
}

}  // namespace

TEST_CASE("cron fields: lists, ranges, steps and names") {
  auto s = cron::parse("*/15 9-17/4 1,15 jan-mar MON-fri");
  REQUIRE(s);
  CHECK(s->minutes.count() == 4);
  CHECK(s->minutes.test(45));
  CHECK(s->hours.test(9));
  CHECK(s->hours.test(13));
  CHECK(s->hours.test(17));
  CHECK_FALSE(s->hours.test(10));
  CHECK(s->days.count() == 2);
  CHECK(s->months.count() == 3);
  CHECK(s->weekdays.count() == 5);
  CHECK_FALSE(s->any_day);
  auto sunday = cron::parse("0 0 * * 7");
  REQUIRE(sunday);
  CHECK(sunday->weekdays.test(0));
  auto daily = cron::parse("@daily");
  REQUIRE(daily);
  CHECK(daily->minutes.count() == 1);
  CHECK(daily->hours.test(0));
}

TEST_CASE("cron errors name the field and the value") {
  CHECK(error_of("0 25 * * *") == "field 2 (hour): '25' is out of range 0-23");
  CHECK(error_of("0 19 * * 1-5 extra") ==
        "'0 19 * * 1-5 extra' has 6 fields; a schedule has 5: minute hour day-of-month month day-of-week");
  CHECK(error_of("0 19 * foo *") == "field 4 (month): 'foo' is not a number or a name");
  CHECK(error_of("*/0 * * * *") == "field 1 (minute): '*/0': the step '0' is not a number from 1 to 59");
  CHECK(error_of("0 5-3 * * *") == "field 2 (hour): '5-3': the range runs backwards");
  CHECK(error_of("0 1,,2 * * *") == "field 2 (hour): '1,,2' has an empty list item");
  CHECK(error_of("@sometimes") == "'@sometimes' is not one of @yearly, @monthly, @weekly, @daily, @hourly");
}

TEST_CASE("next stop in UTC and in a zone with an offset") {
  CHECK(next("0 19 * * 1-5", "UTC", "2026-11-27T11:00:00Z") == "2026-11-27T19:00:00.000Z");  // a Friday
  CHECK(next("0 19 * * 1-5", "UTC", "2026-11-27T19:00:00Z") == "2026-11-30T19:00:00.000Z");  // then Monday
  // Berlin in winter is UTC+1; New York UTC-5; Kolkata UTC+5:30 all year.
  CHECK(next("0 19 * * *", "Europe/Berlin", "2026-11-27T11:00:00Z") == "2026-11-27T18:00:00.000Z");
  CHECK(next("0 19 * * *", "America/New_York", "2026-11-27T11:00:00Z") == "2026-11-28T00:00:00.000Z");
  CHECK(next("30 18 * * *", "Asia/Kolkata", "2026-11-27T11:00:00Z") == "2026-11-27T13:00:00.000Z");
  // Both day fields restricted: either matches (the 1st, or a Monday).
  CHECK(next("0 0 1 * 1", "UTC", "2026-11-27T00:00:00Z") == "2026-11-30T00:00:00.000Z");
  CHECK(next("0 0 31 2 *", "UTC", "2026-11-27T00:00:00Z") == "never");
  CHECK(next("0 12 29 2 *", "UTC", "2026-11-27T00:00:00Z") == "2028-02-29T12:00:00.000Z");
}

TEST_CASE("daylight saving: a skipped time fires when the clocks jump, a repeated one once") {
  // Europe/Berlin 2027: clocks go 02:00 → 03:00 on 28 March (01:00 UTC) and 03:00 → 02:00
  // on 31 October (01:00 UTC).
  CHECK(next("30 2 * * *", "Europe/Berlin", "2027-03-27T12:00:00Z") == "2027-03-28T01:00:00.000Z");
  CHECK(next("30 2 * * *", "Europe/Berlin", "2027-03-28T01:00:00Z") == "2027-03-29T00:30:00.000Z");
  CHECK(next("*/30 * * * *", "Europe/Berlin", "2027-03-28T00:30:00Z") == "2027-03-28T01:00:00.000Z");
  CHECK(next("*/30 * * * *", "Europe/Berlin", "2027-03-28T01:00:00Z") == "2027-03-28T01:30:00.000Z");
  // 02:30 happens twice on 31 October: at 00:30 UTC (CEST) and 01:30 UTC (CET): only the first.
  CHECK(next("30 2 * * *", "Europe/Berlin", "2027-10-30T12:00:00Z") == "2027-10-31T00:30:00.000Z");
  CHECK(next("30 2 * * *", "Europe/Berlin", "2027-10-31T00:30:00Z") == "2027-11-01T01:30:00.000Z");
  // Southern hemisphere: Sydney's daylight time spans the new year (UTC+11 in January).
  CHECK(next("0 9 * * *", "Australia/Sydney", "2027-01-10T00:00:00Z") == "2027-01-10T22:00:00.000Z");
  CHECK(next("0 9 * * *", "Australia/Sydney", "2027-07-10T00:00:00Z") == "2027-07-10T23:00:00.000Z");
  // New York: 2 a.m. on 14 March 2027 does not exist (the jump is at 07:00 UTC).
  CHECK(next("0 2 * * *", "America/New_York", "2027-03-13T12:00:00Z") == "2027-03-14T07:00:00.000Z");
}

TEST_CASE("time zones: names, files and rules") {
  auto berlin = cron::TimeZone::locate("Europe/Berlin");
  REQUIRE(berlin);
  CHECK(berlin->format(at("2026-11-27T18:00:00Z")) == "2026-11-27 19:00 CET");
  CHECK(berlin->format(at("2027-07-01T18:00:00Z")) == "2027-07-01 20:00 CEST");
  auto sao = cron::TimeZone::locate("America/Sao_Paulo");  // "<-03>3": a bracketed name
  REQUIRE(sao);
  CHECK(sao->format(at("2026-11-27T18:00:00Z")) == "2026-11-27 15:00 -03");
  auto bad = cron::TimeZone::locate("Mars/Olympus_Mons");
  REQUIRE_FALSE(bad);
  CHECK(bad.error().message.starts_with("time zone 'Mars/Olympus_Mons': /usr/share/zoneinfo/Mars/Olympus_Mons: cannot open: No such file"));
  auto escape = cron::TimeZone::locate("../../etc/passwd");
  REQUIRE_FALSE(escape);
  CHECK(escape.error().message == "time zone '../../etc/passwd': not an IANA zone name (like Europe/Berlin)");
  auto rule = cron::TimeZone::from_rule("x", "CET-1CEST,M3.5.0,M10.5.0/3x");
  REQUIRE_FALSE(rule);
  CHECK(rule.error().message == "time zone 'x': the rule 'CET-1CEST,M3.5.0,M10.5.0/3x' is not a POSIX TZ rule: unexpected 'x'");
}
