#include "agent/setup/records.hpp"

#include <array>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>

namespace instanced::setup {
namespace json = boost::json;

namespace {
constexpr std::array<std::string_view, 6> kStates{"pending", "running", "succeeded", "failed", "timed_out",
                                                  "interrupted"};
}

std::string_view to_string(ScriptState s) { return kStates[static_cast<std::size_t>(s)]; }

std::optional<ScriptState> parse_state(std::string_view s) {
  for (std::size_t i = 0; i < kStates.size(); ++i)
    if (kStates[i] == s) return static_cast<ScriptState>(i);
  return std::nullopt;
}

json::object to_json(const RunRecord& r) {
  json::object o{{"run_id", r.run_id},   {"boot_id", r.boot_id}, {"started", r.started},
                 {"ended", r.ended},     {"duration_seconds", r.duration_seconds},
                 {"signal", r.signal},   {"reason", r.reason},   {"log", r.log},
                 {"layout", r.layout.to_json()}};
  o["exit_code"] = r.exit_code ? json::value(*r.exit_code) : json::value(nullptr);
  json::array left;
  for (int p : r.leftovers) left.push_back(p);
  o["leftovers"] = std::move(left);
  return o;
}

std::string Records::to_json() const {
  json::object scripts_json;
  for (const auto& [name, s] : scripts)
    scripts_json[name] = json::object{{"state", to_string(s.state)}, {"runs", s.runs}, {"last", setup::to_json(s.last)}};
  return json::serialize(json::object{{"version", 1}, {"scripts", std::move(scripts_json)}});
}

Result<Records> Records::parse(std::string_view text) {
  boost::system::error_code ec;
  json::value v = json::parse(text, ec);
  if (ec) return Error{fmt::format("not valid JSON: {}", ec.message())};
  if (!v.is_object()) return Error{"not a JSON object"};
  auto* version = v.as_object().if_contains("version");
  if (!version || !version->is_int64() || version->as_int64() != 1) return Error{"version: expected 1"};
  auto* scripts = v.as_object().if_contains("scripts");
  if (!scripts || !scripts->is_object()) return Error{"scripts: missing or not an object"};
  Records out;
  for (const auto& [name, s] : scripts->as_object()) {
    std::string at = fmt::format("scripts.{}", std::string_view(name));
    if (!s.is_object()) return Error{at + ": not an object"};
    const auto& o = s.as_object();
    auto* st = o.if_contains("state");
    if (!st || !st->is_string()) return Error{at + ".state: missing"};
    auto state = parse_state(st->as_string());
    if (!state) return Error{fmt::format("{}.state: '{}' is not a state", at, std::string_view(st->as_string()))};
    ScriptRecord rec;
    rec.state = *state;
    if (auto* runs = o.if_contains("runs"); runs && runs->is_int64()) rec.runs = static_cast<std::uint64_t>(runs->as_int64());
    if (auto* runs = o.if_contains("runs"); runs && runs->is_uint64()) rec.runs = runs->as_uint64();
    if (auto* last = o.if_contains("last"); last && last->is_object()) {
      const auto& l = last->as_object();
      auto str = [&](const char* k) {
        auto* f = l.if_contains(k);
        return f && f->is_string() ? std::string(f->as_string()) : std::string();
      };
      auto& r = rec.last;
      r.run_id = str("run_id");
      r.boot_id = str("boot_id");
      r.started = str("started");
      r.ended = str("ended");
      r.reason = str("reason");
      r.log = str("log");
      if (auto* d = l.if_contains("duration_seconds"); d && d->is_number()) r.duration_seconds = d->to_number<double>();
      if (auto* e = l.if_contains("exit_code"); e && e->is_int64()) r.exit_code = static_cast<int>(e->as_int64());
      if (auto* sg = l.if_contains("signal"); sg && sg->is_int64()) r.signal = static_cast<int>(sg->as_int64());
      if (auto* lay = l.if_contains("layout"); lay && lay->is_object()) r.layout = LogLayout::from_json(lay->as_object());
      if (auto* left = l.if_contains("leftovers"); left && left->is_array())
        for (const auto& p : left->as_array())
          if (p.is_int64()) r.leftovers.push_back(static_cast<int>(p.as_int64()));
    }
    out.scripts[std::string(name)] = std::move(rec);
  }
  return out;
}

}  // namespace instanced::setup
