#include "agent/status/router.hpp"

#include <charconv>

#include <algorithm>
#include <boost/json/serialize.hpp>
#include <boost/json/value.hpp>
#include <fmt/format.h>

namespace instanced::status {

bool authorized(const Peer& peer, gid_t operators_gid) {
  if (peer.uid == 0) return true;
  if (peer.gid == operators_gid) return true;
  return std::find(peer.groups.begin(), peer.groups.end(), operators_gid) != peer.groups.end();
}

std::optional<std::uint64_t> offset_param(const Request& request, std::string_view key) {
  auto v = query_param(request, key);
  if (!v) return 0;
  std::uint64_t n = 0;
  auto [p, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
  if (ec != std::errc() || p != v->data() + v->size()) return std::nullopt;
  return n;
}

Response log_chunk_response(LogChunk chunk, bool running) {
  auto res = text_response(http::status::ok, std::move(chunk.data), "application/octet-stream");
  res.set("X-Instanced-Next", std::to_string(chunk.next));
  res.set("X-Instanced-Skipped", std::to_string(chunk.skipped));
  res.set("X-Instanced-Running", running ? "1" : "0");
  return res;
}

Response text_response(http::status status, std::string body, std::string content_type) {
  Response res{status, 11};
  res.set(http::field::server, "instanced");
  res.set(http::field::content_type, content_type);
  res.set(http::field::cache_control, "no-store");
  res.body() = std::move(body);
  res.prepare_payload();
  return res;
}

Response json_response(http::status status, std::string body) {
  body.push_back('\n');
  return text_response(status, std::move(body), "application/json");
}

Response error_response(http::status status, std::string_view message) {
  boost::json::object o;
  o["error"] = message;
  return json_response(status, boost::json::serialize(o));
}

std::optional<std::string> query_param(const Request& request, std::string_view key) {
  std::string_view target = request.target();
  auto q = target.find('?');
  if (q == std::string_view::npos) return std::nullopt;
  std::string_view rest = target.substr(q + 1);
  while (!rest.empty()) {
    auto amp = rest.find('&');
    std::string_view pair = rest.substr(0, amp);
    rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
    auto eq = pair.find('=');
    if (pair.substr(0, eq) != key) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    std::string out;
    for (std::size_t i = 0; i < raw.size(); ++i) {
      auto hex = [](char c) -> int {
        if (c >= '0' && c <= '9') return c - '0';
        if (c >= 'a' && c <= 'f') return c - 'a' + 10;
        if (c >= 'A' && c <= 'F') return c - 'A' + 10;
        return -1;
      };
      if (raw[i] == '%' && i + 2 < raw.size() && hex(raw[i + 1]) >= 0 && hex(raw[i + 2]) >= 0) {
        out.push_back(static_cast<char>(hex(raw[i + 1]) * 16 + hex(raw[i + 2])));
        i += 2;
      } else {
        out.push_back(raw[i] == '+' ? ' ' : raw[i]);
      }
    }
    return out;
  }
  return std::nullopt;
}

void Router::add(http::verb method, std::string path, Handler handler) {
  routes_[std::move(path)][method] = Route{std::move(handler), {}};
}

void Router::add_async(http::verb method, std::string path, AsyncHandler handler) {
  routes_[std::move(path)][method] = Route{{}, std::move(handler)};
}

const Router::Route* Router::find(const Request& request, Response& refusal) const {
  std::string_view target = request.target();
  auto q = target.find('?');
  std::string path(target.substr(0, q));
  auto it = routes_.find(path);
  if (it == routes_.end()) {
    refusal = error_response(http::status::not_found, fmt::format("no such path: {}", path));
    return nullptr;
  }
  auto m = it->second.find(request.method());
  if (m == it->second.end()) {
    std::vector<std::string> allowed;
    for (const auto& [verb, h] : it->second) allowed.emplace_back(http::to_string(verb));
    refusal = error_response(http::status::method_not_allowed,
                             fmt::format("{} does not take {}", path, std::string(request.method_string())));
    refusal.set(http::field::allow, fmt::format("{}", fmt::join(allowed, ", ")));
    return nullptr;
  }
  return &m->second;
}

Response Router::handle(const Request& request) const {
  Response refusal;
  const Route* route = find(request, refusal);
  if (!route) return refusal;
  if (!route->handler) return error_response(http::status::internal_server_error, "this path answers only on the socket");
  return route->handler(request);
}

boost::asio::awaitable<Response> Router::handle_async(const Request& request) const {
  Response refusal;
  const Route* route = find(request, refusal);
  if (!route) co_return refusal;
  if (route->async) co_return co_await route->async(request);
  co_return route->handler(request);
}

std::vector<std::string> Router::paths(http::verb method) const {
  std::vector<std::string> out;
  for (const auto& [path, methods] : routes_)
    if (methods.contains(method)) out.push_back(path);
  return out;
}

}  // namespace instanced::status
