#include "agent/status/router.hpp"

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

void Router::add(http::verb method, std::string path, Handler handler) {
  routes_[std::move(path)][method] = std::move(handler);
}

Response Router::handle(const Request& request) const {
  std::string_view target = request.target();
  auto q = target.find('?');
  std::string path(target.substr(0, q));
  auto it = routes_.find(path);
  if (it == routes_.end()) return error_response(http::status::not_found, fmt::format("no such path: {}", path));
  auto m = it->second.find(request.method());
  if (m == it->second.end()) {
    std::vector<std::string> allowed;
    for (const auto& [verb, h] : it->second) allowed.emplace_back(http::to_string(verb));
    auto res = error_response(http::status::method_not_allowed,
                              fmt::format("{} does not take {}", path, std::string(request.method_string())));
    res.set(http::field::allow, fmt::format("{}", fmt::join(allowed, ", ")));
    return res;
  }
  return m->second(request);
}

}  // namespace instanced::status
