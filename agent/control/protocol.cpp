#include "agent/control/protocol.hpp"

#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fmt/format.h>
#include <cmath>
#include <random>

namespace instanced::control {
namespace json = boost::json;

std::string_view to_string(Status s) {
  switch (s) {
    case Status::ok: return "ok";
    case Status::failed: return "failed";
    case Status::refused: return "refused";
    case Status::invalid: return "invalid";
    case Status::unsupported: return "unsupported";
    case Status::expired: return "expired";
    case Status::interrupted: return "interrupted";
  }
  return "failed";
}

std::string new_id() {
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return fmt::format("{:016x}", rng());
}

std::string encode(const Message& m) {
  json::object o;
  o["v"] = kProtocolVersion;
  o["type"] = m.type;
  o["id"] = m.id;
  if (m.seq) o["seq"] = *m.seq;
  o["ts"] = m.ts;
  o["body"] = m.body;
  return json::serialize(o);
}

namespace {
// The path of the first number that overflowed a double (JSON allows 1e999; a double holds
// it as infinity, which no JSON serializer can write back), or nothing. Recursion is bounded
// by the parser's depth limit.
std::optional<std::string> non_finite_at(const json::value& v, const std::string& path) {
  if (v.is_double()) {
    if (!std::isfinite(v.get_double())) return path;
  } else if (v.is_object()) {
    for (auto& [k, e] : v.get_object())
      if (auto p = non_finite_at(e, path.empty() ? std::string(k) : fmt::format("{}.{}", path, std::string_view(k))))
        return p;
  } else if (v.is_array()) {
    auto& a = v.get_array();
    for (std::size_t i = 0; i < a.size(); ++i)
      if (auto p = non_finite_at(a[i], fmt::format("{}[{}]", path, i))) return p;
  }
  return std::nullopt;
}
}  // namespace

Result<Message> decode(std::string_view text, const Limits& limits, Message* partial) {
  if (text.size() > limits.max_bytes)
    return Error{fmt::format("message of {} bytes exceeds the limit of {}", text.size(), limits.max_bytes)};
  json::parse_options opt;
  opt.max_depth = limits.max_depth;
  boost::system::error_code ec;
  json::value v = json::parse(text, ec, {}, opt);
  if (ec) return Error{fmt::format("not valid JSON (or nested deeper than {}): {}", limits.max_depth, ec.message())};
  if (!v.is_object()) return Error{"message is not a JSON object"};
  if (auto at = non_finite_at(v, "")) return Error{fmt::format("{}: number out of range", *at)};
  auto& o = v.as_object();
  auto* ver = o.if_contains("v");
  if (!ver || !ver->is_int64() || ver->as_int64() != kProtocolVersion)
    return Error{fmt::format("v: expected {}", kProtocolVersion)};
  Message m;
  auto str_field = [&](const char* key, std::string& out) -> std::optional<std::string> {
    auto* f = o.if_contains(key);
    if (!f || !f->is_string()) return fmt::format("{}: missing or not a string", key);
    out = std::string(f->as_string());
    if (out.empty() || out.size() > 256) return fmt::format("{}: must have 1 to 256 characters", key);
    return std::nullopt;
  };
  if (auto e = str_field("type", m.type)) return Error{*e};
  if (auto e = str_field("id", m.id)) {
    if (partial) partial->type = m.type;
    return Error{*e};
  }
  auto failed = [&](std::string message) {
    if (partial) partial->type = m.type, partial->id = m.id;
    return Error{std::move(message)};
  };
  if (auto* seq = o.if_contains("seq")) {
    if (seq->is_uint64()) m.seq = seq->as_uint64();
    else if (seq->is_int64() && seq->as_int64() >= 0) m.seq = static_cast<std::uint64_t>(seq->as_int64());
    else return failed("seq: must be a non-negative integer");
  }
  if (auto* ts = o.if_contains("ts"); ts && ts->is_string()) m.ts = std::string(ts->as_string());
  auto* body = o.if_contains("body");
  if (!body || !body->is_object()) return failed("body: missing or not an object");
  m.body = std::move(body->as_object());
  return m;
}

Result<Command> command_of(const Message& m) {
  Command c;
  c.id = m.id;
  auto* name = m.body.if_contains("name");
  if (!name || !name->is_string() || name->as_string().empty()) return Error{"body.name: missing or not a string"};
  c.name = std::string(name->as_string());
  if (auto* args = m.body.if_contains("args")) {
    if (!args->is_object()) return Error{"body.args: not an object"};
    c.args = args->as_object();
  }
  if (auto* d = m.body.if_contains("deadline")) {
    if (!d->is_string()) return Error{"body.deadline: not an RFC 3339 string"};
    c.deadline = std::string(d->as_string());
  }
  return c;
}

}  // namespace instanced::control
