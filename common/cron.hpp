// Cron-like schedules in a time zone: "MIN HOUR DAY-OF-MONTH MONTH DAY-OF-WEEK" as in
// crontab(5) (lists, ranges, steps, names, @daily and friends), evaluated in an IANA
// time zone from the system's tzdata: the rule a zone file ends with (its POSIX TZ
// footer, tzfile(5)), which is the rule for every time from now on. Schedules only look
// ahead, so the zone's history is not read. (Debian's libhowardhinnant-date-dev would
// read the whole database, but ships only a shared library built on the shared
// libstdc++, which the agent links statically.)
//
// Daylight saving time, as cronie does it: a time that does not exist that day (02:30 when
// clocks go 02:00 → 03:00) fires at the moment the clocks jump; a time that happens twice
// (02:30 when clocks go 03:00 → 02:00) fires once, the first time.
#pragma once

#include <bitset>
#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/result.hpp"

namespace instanced::cron {

using TimePoint = std::chrono::system_clock::time_point;

class TimeZone {
 public:
  // "UTC", "Europe/Berlin": read from $TZDIR or /usr/share/zoneinfo. The error names the
  // zone and why it is not usable.
  static Result<TimeZone> locate(const std::string& name);
  // A POSIX TZ rule ("CET-1CEST,M3.5.0,M10.5.0/3"), as a zone file's footer holds it.
  static Result<TimeZone> from_rule(const std::string& name, std::string_view rule);
  const std::string& name() const { return name_; }
  // "2026-11-27 19:00 CET"
  std::string format(TimePoint t) const;

  // Seconds east of UTC at `t`, and the abbreviation then.
  std::pair<int, std::string> offset_at(TimePoint t) const;
  // The moment a local wall-clock time (seconds since 1970-01-01 00:00 local) happens:
  // the first of two when it happens twice, the clocks' jump when it does not happen.
  TimePoint to_utc(std::int64_t local_seconds) const;

  struct Rule {
    char kind = 'M';  // 'M': month.week.day; 'J': day 1..365 without Feb 29; 'N': day 0..365
    int month = 0, week = 0, weekday = 0, day = 0;
    int time = 7200;  // seconds after local midnight (may be negative or past 24h)
  };

 private:
  std::int64_t transition(int year, bool to_dst) const;  // UTC seconds
  bool dst_at(std::int64_t utc) const;

  std::string name_;
  int std_offset_ = 0;  // seconds east of UTC
  int dst_offset_ = 0;
  std::string std_name_ = "UTC", dst_name_;
  bool has_dst_ = false;
  Rule start_, end_;
};

struct Schedule {
  std::string text;
  std::bitset<60> minutes;
  std::bitset<24> hours;
  std::bitset<32> days;      // 1..31
  std::bitset<13> months;    // 1..12
  std::bitset<7> weekdays;   // 0 = Sunday
  bool any_day = true;       // the day-of-month field was '*'
  bool any_weekday = true;   // the day-of-week field was '*'
};

// The error names the field: "field 2 (hour): '25' is out of range 0-23".
Result<Schedule> parse(std::string_view expression);

// A time zone and the stop and start expressions to read in it, parsed. The error names
// what was wrong: "time_zone: time zone 'X': …", "stop[1]: field 2 (hour): …".
struct ZonedSchedules {
  TimeZone zone;  // default: UTC
  std::vector<Schedule> stop, start;
};
Result<ZonedSchedules> parse_schedules(const std::string& time_zone, const std::vector<std::string>& stop,
                                       const std::vector<std::string>& start);

// The first time strictly after `after` that the schedule names, in `zone`; nothing when
// it names none within the next five years ("0 0 31 2 *").
std::optional<TimePoint> next_after(const Schedule& s, const TimeZone& zone, TimePoint after);

}  // namespace instanced::cron
