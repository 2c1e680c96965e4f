#include "common/cron.hpp"

#include "common/fs.hpp"

#include <array>
#include <charconv>
#include <cstdlib>
#include <fmt/format.h>
#include <vector>

namespace instanced::cron {
namespace {

struct Field {
  const char* name;
  int lo;
  int hi;
  const std::array<std::string_view, 12>* names;  // lo-based names, or null
};

constexpr std::array<std::string_view, 12> kMonths{"jan", "feb", "mar", "apr", "may", "jun",
                                                   "jul", "aug", "sep", "oct", "nov", "dec"};
constexpr std::array<std::string_view, 12> kWeekdays{"sun", "mon", "tue", "wed", "thu", "fri", "sat", "", "", "", "", ""};

const std::array<Field, 5> kFields{{{"minute", 0, 59, nullptr},
                                    {"hour", 0, 23, nullptr},
                                    {"day of month", 1, 31, nullptr},
                                    {"month", 1, 12, &kMonths},
                                    {"day of week", 0, 7, &kWeekdays}}};

std::string lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

Result<int> value(std::string_view text, const Field& f) {
  int v = 0;
  auto [p, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec == std::errc() && p == text.data() + text.size()) {
    if (v < f.lo || v > f.hi) return Error{fmt::format("'{}' is out of range {}-{}", text, f.lo, f.hi)};
    return v;
  }
  if (f.names) {
    std::string l = lower(text);
    for (std::size_t i = 0; i < f.names->size(); ++i)
      if (!(*f.names)[i].empty() && (*f.names)[i] == l) return static_cast<int>(i) + (f.lo == 1 ? 1 : 0);
  }
  return Error{fmt::format("'{}' is not a number{}", text, f.names ? " or a name" : "")};
}

// One field: "*", "*/15", "1-5", "1-5/2", "mon,wed,fri", "3". Sets bits lo..hi.
Result<std::vector<int>> field_values(std::string_view text, const Field& f) {
  std::vector<int> out;
  if (text.empty()) return Error{"is empty"};
  std::size_t start = 0;
  while (start <= text.size()) {
    std::size_t comma = text.find(',', start);
    std::string_view item = text.substr(start, comma == std::string_view::npos ? std::string_view::npos : comma - start);
    if (item.empty()) return Error{fmt::format("'{}' has an empty list item", text)};
    int step = 1;
    if (auto slash = item.find('/'); slash != std::string_view::npos) {
      std::string_view s = item.substr(slash + 1);
      auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), step);
      if (ec != std::errc() || p != s.data() + s.size() || step < 1 || step > f.hi)
        return Error{fmt::format("'{}': the step '{}' is not a number from 1 to {}", item, s, f.hi)};
      item = item.substr(0, slash);
    }
    int a = f.lo, b = f.hi;
    if (item != "*") {
      auto dash = item.find('-');
      auto first = value(item.substr(0, dash), f);
      if (!first) return first.error();
      a = b = *first;
      if (dash != std::string_view::npos) {
        auto last = value(item.substr(dash + 1), f);
        if (!last) return last.error();
        b = *last;
        if (b < a) return Error{fmt::format("'{}': the range runs backwards", item)};
      } else if (step != 1) {
        b = f.hi;  // "5/15": from 5 to the end, as cronie reads it
      }
    }
    for (int v = a; v <= b; v += step) out.push_back(v);
    if (comma == std::string_view::npos) break;
    start = comma + 1;
  }
  return out;
}

// ---- POSIX TZ rules (tzfile(5), "TZ string"; glibc's tzset(3)) ----

struct RuleReader {
  std::string_view s;
  std::size_t i = 0;
  bool done() const { return i >= s.size(); }
  char peek() const { return done() ? '\0' : s[i]; }

  Result<std::string> name() {
    if (peek() == '<') {
      auto close = s.find('>', i);
      if (close == std::string_view::npos) return Error{"an unclosed '<' in a zone name"};
      std::string n(s.substr(i + 1, close - i - 1));
      i = close + 1;
      return n;
    }
    std::size_t start = i;
    while (!done() && std::isalpha(static_cast<unsigned char>(peek()))) ++i;
    if (i - start < 3) return Error{fmt::format("a zone name of at least 3 letters expected at '{}'", s.substr(start))};
    return std::string(s.substr(start, i - start));
  }
  // [+-]hh[:mm[:ss]] in seconds
  Result<int> clock(int max_hours) {
    int sign = 1;
    if (peek() == '+' || peek() == '-') sign = s[i++] == '-' ? -1 : 1;
    int parts[3] = {0, 0, 0};
    for (int k = 0; k < 3; ++k) {
      if (k > 0) {
        if (peek() != ':') break;
        ++i;
      }
      std::size_t start = i;
      while (!done() && std::isdigit(static_cast<unsigned char>(peek()))) ++i;
      if (i == start) return Error{fmt::format("a time expected at '{}'", s.substr(start))};
      std::from_chars(s.data() + start, s.data() + i, parts[k]);
    }
    if (parts[0] > max_hours || parts[1] > 59 || parts[2] > 59) return Error{"a time out of range"};
    return sign * (parts[0] * 3600 + parts[1] * 60 + parts[2]);
  }
  Result<int> number() {
    std::size_t start = i;
    while (!done() && std::isdigit(static_cast<unsigned char>(peek()))) ++i;
    if (i == start) return Error{fmt::format("a number expected at '{}'", s.substr(start))};
    int v = 0;
    std::from_chars(s.data() + start, s.data() + i, v);
    return v;
  }
  Result<TimeZone::Rule> rule() {
    TimeZone::Rule r;
    if (peek() == 'M') {
      ++i;
      auto m = number();
      if (!m || peek() != '.') return Error{"Mm.w.d expected"};
      ++i;
      auto w = number();
      if (!w || peek() != '.') return Error{"Mm.w.d expected"};
      ++i;
      auto d = number();
      if (!d || *m < 1 || *m > 12 || *w < 1 || *w > 5 || *d > 6) return Error{"Mm.w.d out of range"};
      r.kind = 'M', r.month = *m, r.week = *w, r.weekday = *d;
    } else {
      r.kind = 'N';
      if (peek() == 'J') ++i, r.kind = 'J';
      auto d = number();
      if (!d || *d > 365 || (r.kind == 'J' && *d < 1)) return Error{"a day of the year out of range"};
      r.day = *d;
    }
    if (peek() == '/') {
      ++i;
      auto t = clock(167);
      if (!t) return t.error();
      r.time = *t;
    }
    return r;
  }
};

std::int64_t days_from_civil(int y, unsigned m, unsigned d) {
  using namespace std::chrono;
  return sys_days{year{y} / month{m} / day{d}}.time_since_epoch().count();
}

// Local midnight (seconds since the epoch, local) of the day a rule names in `y`.
std::int64_t rule_day(const TimeZone::Rule& r, int y) {
  using namespace std::chrono;
  std::int64_t days = 0;
  if (r.kind == 'M') {
    auto first = sys_days{year{y} / month{static_cast<unsigned>(r.month)} / day{1}};
    int wd0 = static_cast<int>(weekday{first}.c_encoding());
    int d = 1 + (r.weekday - wd0 + 7) % 7 + (r.week - 1) * 7;
    int last = static_cast<int>(static_cast<unsigned>((year{y} / month{static_cast<unsigned>(r.month)} / std::chrono::last).day()));
    while (d > last) d -= 7;  // week 5: the last such weekday
    days = days_from_civil(y, r.month, d);
  } else if (r.kind == 'J') {
    bool leap = year{y}.is_leap();
    days = days_from_civil(y, 1, 1) + r.day - 1 + (leap && r.day >= 60 ? 1 : 0);
  } else {
    days = days_from_civil(y, 1, 1) + r.day;
  }
  return days * 86400;
}

int year_of(std::int64_t seconds) {
  using namespace std::chrono;
  year_month_day ymd{sys_days{days{seconds >= 0 ? seconds / 86400 : (seconds - 86399) / 86400}}};
  return static_cast<int>(ymd.year());
}

constexpr std::size_t kMaxZoneFileBytes = 1 << 20;  // the largest in tzdata is ~3 KiB

}  // namespace

Result<TimeZone> TimeZone::from_rule(const std::string& name, std::string_view rule) {
  TimeZone z;
  z.name_ = name;
  RuleReader r{rule};
  auto bad = [&](const std::string& why) {
    return Error{fmt::format("time zone '{}': the rule '{}' is not a POSIX TZ rule: {}", name, rule, why)};
  };
  auto std_name = r.name();
  if (!std_name) return bad(std_name.error().message);
  auto std_off = r.clock(24);
  if (!std_off) return bad(std_off.error().message);
  z.std_name_ = *std_name;
  z.std_offset_ = -*std_off;  // POSIX counts west
  if (r.done()) return z;
  auto dst_name = r.name();
  if (!dst_name) return bad(dst_name.error().message);
  z.dst_name_ = *dst_name;
  z.has_dst_ = true;
  z.dst_offset_ = z.std_offset_ + 3600;
  if (!r.done() && r.peek() != ',') {
    auto off = r.clock(24);
    if (!off) return bad(off.error().message);
    z.dst_offset_ = -*off;
  }
  if (r.done()) {
    // No rule given: glibc's default, the US rule since 2007.
    z.start_ = Rule{'M', 3, 2, 0, 0, 7200};
    z.end_ = Rule{'M', 11, 1, 0, 0, 7200};
    return z;
  }
  if (r.peek() != ',') return bad("',' expected before the start rule");
  ++r.i;
  auto start = r.rule();
  if (!start) return bad(start.error().message);
  if (r.peek() != ',') return bad("',' expected before the end rule");
  ++r.i;
  auto end = r.rule();
  if (!end) return bad(end.error().message);
  if (!r.done()) return bad(fmt::format("unexpected '{}'", rule.substr(r.i)));
  z.start_ = *start;
  z.end_ = *end;
  return z;
}

Result<TimeZone> TimeZone::locate(const std::string& name) {
  if (name == "UTC" || name == "Etc/UTC") return from_rule(name, "UTC0");
  bool ok = !name.empty() && name.front() != '/' && name.find("..") == std::string::npos;
  for (char c : name) ok = ok && (std::isalnum(static_cast<unsigned char>(c)) || c == '/' || c == '_' || c == '-' || c == '+');
  if (!ok) return Error{fmt::format("time zone '{}': not an IANA zone name (like Europe/Berlin)", name)};
  const char* dir = std::getenv("TZDIR");
  std::string path = fmt::format("{}/{}", dir && *dir ? dir : "/usr/share/zoneinfo", name);
  auto read = read_regular_file(path, kMaxZoneFileBytes);
  if (!read) return Error{fmt::format("time zone '{}': {}", name, read.error().message)};
  const std::string& data = *read;
  if (data.empty()) return Error{fmt::format("time zone '{}': {}: empty", name, path)};
  if (data.size() < 44 || data.compare(0, 4, "TZif") != 0)
    return Error{fmt::format("time zone '{}': {} is not a zone file (tzfile(5))", name, path)};
  if (data[4] < '2' || data.back() != '\n')
    return Error{fmt::format("time zone '{}': {} has no POSIX rule (a version 1 zone file)", name, path)};
  auto nl = data.rfind('\n', data.size() - 2);
  if (nl == std::string::npos) return Error{fmt::format("time zone '{}': {} has no POSIX rule", name, path)};
  std::string footer = data.substr(nl + 1, data.size() - nl - 2);
  if (footer.empty())
    return Error{fmt::format("time zone '{}': {} has an empty POSIX rule (no rule for future times)", name, path)};
  return from_rule(name, footer);
}

std::int64_t TimeZone::transition(int year, bool to_dst) const {
  const Rule& r = to_dst ? start_ : end_;
  // The start is given in standard time, the end in daylight time.
  return rule_day(r, year) + r.time - (to_dst ? std_offset_ : dst_offset_);
}

bool TimeZone::dst_at(std::int64_t utc) const {
  if (!has_dst_) return false;
  int y = year_of(utc + std_offset_);
  std::int64_t s = transition(y, true), e = transition(y, false);
  return s < e ? (utc >= s && utc < e) : (utc >= s || utc < e);
}

std::pair<int, std::string> TimeZone::offset_at(TimePoint t) const {
  auto utc = std::chrono::duration_cast<std::chrono::seconds>(t.time_since_epoch()).count();
  if (dst_at(utc)) return {dst_offset_, dst_name_};
  return {std_offset_, std_name_};
}

TimePoint TimeZone::to_utc(std::int64_t local) const {
  auto tp = [](std::int64_t s) { return TimePoint(std::chrono::seconds(s)); };
  std::int64_t as_std = local - std_offset_;
  if (!has_dst_) return tp(as_std);
  std::int64_t as_dst = local - dst_offset_;
  bool std_ok = !dst_at(as_std);
  bool dst_ok = dst_at(as_dst);
  if (std_ok && dst_ok) return tp(std::min(as_std, as_dst));  // happens twice: the first
  if (std_ok) return tp(as_std);
  if (dst_ok) return tp(as_dst);
  // Skipped: the clocks jumped over it, at the transition between the two readings.
  std::int64_t lo = std::min(as_std, as_dst), hi = std::max(as_std, as_dst);
  for (int y = year_of(local) - 1; y <= year_of(local) + 1; ++y)
    for (bool to_dst : {true, false})
      if (std::int64_t t = transition(y, to_dst); t >= lo && t <= hi) return tp(t);
  return tp(as_std);
}

std::string TimeZone::format(TimePoint t) const {
  using namespace std::chrono;
  auto [offset, abbrev] = offset_at(t);
  auto local = duration_cast<seconds>(t.time_since_epoch()).count() + offset;
  auto days_since = local >= 0 ? local / 86400 : (local - 86399) / 86400;
  year_month_day ymd{sys_days{days{days_since}}};
  auto in_day = local - days_since * 86400;
  return fmt::format("{:04}-{:02}-{:02} {:02}:{:02} {}", static_cast<int>(ymd.year()),
                     static_cast<unsigned>(ymd.month()), static_cast<unsigned>(ymd.day()), in_day / 3600,
                     in_day % 3600 / 60, abbrev);
}

Result<Schedule> parse(std::string_view expression) {
  Schedule s;
  s.text = std::string(expression);
  std::string_view e = expression;
  while (!e.empty() && e.front() == ' ') e.remove_prefix(1);
  while (!e.empty() && e.back() == ' ') e.remove_suffix(1);
  static const std::array<std::pair<std::string_view, std::string_view>, 7> kMacros{{{"@yearly", "0 0 1 1 *"},
                                                                                      {"@annually", "0 0 1 1 *"},
                                                                                      {"@monthly", "0 0 1 * *"},
                                                                                      {"@weekly", "0 0 * * 0"},
                                                                                      {"@daily", "0 0 * * *"},
                                                                                      {"@midnight", "0 0 * * *"},
                                                                                      {"@hourly", "0 * * * *"}}};
  if (!e.empty() && e.front() == '@') {
    for (auto [m, expanded] : kMacros)
      if (e == m) e = expanded;
    if (e.front() == '@') return Error{fmt::format("'{}' is not one of @yearly, @monthly, @weekly, @daily, @hourly", e)};
  }
  std::vector<std::string_view> parts;
  std::size_t i = 0;
  while (i < e.size()) {
    while (i < e.size() && (e[i] == ' ' || e[i] == '\t')) ++i;
    std::size_t j = i;
    while (j < e.size() && e[j] != ' ' && e[j] != '\t') ++j;
    if (j > i) parts.push_back(e.substr(i, j - i));
    i = j;
  }
  if (parts.size() != 5)
    return Error{fmt::format("'{}' has {} fields; a schedule has 5: minute hour day-of-month month day-of-week",
                             expression, parts.size())};
  for (std::size_t k = 0; k < 5; ++k) {
    auto values = field_values(parts[k], kFields[k]);
    if (!values) return Error{fmt::format("field {} ({}): {}", k + 1, kFields[k].name, values.error().message)};
    for (int v : *values) {
      switch (k) {
        case 0: s.minutes.set(v); break;
        case 1: s.hours.set(v); break;
        case 2: s.days.set(v); break;
        case 3: s.months.set(v); break;
        case 4: s.weekdays.set(v % 7); break;
      }
    }
  }
  s.any_day = parts[2] == "*";
  s.any_weekday = parts[4] == "*";
  return s;
}

Result<ZonedSchedules> parse_schedules(const std::string& time_zone, const std::vector<std::string>& stop,
                                       const std::vector<std::string>& start) {
  ZonedSchedules out;
  auto zone = TimeZone::locate(time_zone);
  if (!zone) return Error{"time_zone: " + zone.error().message};
  out.zone = std::move(*zone);
  for (const auto* list : {&stop, &start}) {
    const char* key = list == &stop ? "stop" : "start";
    auto& parsed = list == &stop ? out.stop : out.start;
    for (std::size_t i = 0; i < list->size(); ++i) {
      auto s = parse((*list)[i]);
      if (!s) return Error{fmt::format("{}[{}]: {}", key, i, s.error().message)};
      parsed.push_back(std::move(*s));
    }
  }
  return out;
}

std::optional<TimePoint> next_after(const Schedule& s, const TimeZone& zone, TimePoint after) {
  using namespace std::chrono;
  const auto after_s = duration_cast<seconds>(after.time_since_epoch()).count();
  const std::int64_t local = after_s + zone.offset_at(after).first;
  // Start a day early: a skipped or repeated hour near midnight maps across days.
  std::int64_t day = (local >= 0 ? local / 86400 : (local - 86399) / 86400) - 1;
  for (int n = 0; n < 366 * 5 + 2; ++n, ++day) {
    year_month_day ymd{sys_days{days{day}}};
    if (!s.months.test(static_cast<unsigned>(ymd.month()))) continue;
    bool dom = s.days.test(static_cast<unsigned>(ymd.day()));
    bool dow = s.weekdays.test(weekday{sys_days{days{day}}}.c_encoding());
    // crontab(5): with both day fields restricted, either matching is enough.
    bool match = s.any_day && s.any_weekday ? true
                 : s.any_day               ? dow
                 : s.any_weekday           ? dom
                                           : (dom || dow);
    if (!match) continue;
    for (int h = 0; h < 24; ++h) {
      if (!s.hours.test(h)) continue;
      for (int m = 0; m < 60; ++m) {
        if (!s.minutes.test(m)) continue;
        TimePoint at = zone.to_utc(day * 86400 + h * 3600 + m * 60);
        if (at > after) return at;
      }
    }
  }
  return std::nullopt;
}

}  // namespace instanced::cron
