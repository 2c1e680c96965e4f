#include "agent/apps/probe.hpp"
#include "common/build_info.hpp"
#include "common/coro.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <fmt/format.h>

namespace instanced::apps {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

std::string_view to_string(AppState s) {
  switch (s) {
    case AppState::unknown: return "unknown";
    case AppState::up: return "up";
    case AppState::degraded: return "degraded";
    case AppState::down: return "down";
  }
  return "?";
}

asio::awaitable<Result<HttpAnswer>> http_get(const Url& url, const Secret& token, Duration timeout,
                                             std::size_t max_body) {
  HttpHeaders headers;
  if (!token.empty()) headers.emplace_back("Authorization", "token " + token.reveal());
  co_return co_await instanced::http_get(url, headers, timeout, max_body);
}

asio::awaitable<Result<Duration>> websocket_handshake(const Url& url, const Secret& token, Duration timeout) {
  auto started = std::chrono::steady_clock::now();
  beast::websocket::stream<beast::tcp_stream> ws(co_await asio::this_coro::executor);
  try {
    beast::get_lowest_layer(ws).expires_after(timeout);
    co_await connect_to(beast::get_lowest_layer(ws), url);
    ws.set_option(beast::websocket::stream_base::decorator([&token](beast::websocket::request_type& req) {
      req.set(http::field::user_agent, std::string("instanced/") + build_version());
      if (!token.empty()) req.set(http::field::authorization, "token " + token.reveal());
    }));
    beast::websocket::response_type res;
    co_await ws.async_handshake(res, url.authority(), url.target, asio::use_awaitable);
    auto elapsed = std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - started);
    boost::system::error_code ec;
    beast::get_lowest_layer(ws).expires_after(timeout);
    co_await ws.async_close(beast::websocket::close_code::normal, asio::redirect_error(asio::use_awaitable, ec));
    co_return elapsed;
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
    co_return Error{fmt::format("WebSocket {}: {}", url.target, describe_io_error(e))};
  }
}

Verdict judge(const Result<HttpAnswer>& answer, unsigned expect_status, Duration slow) {
  if (!answer) return {AppState::down, answer.error().message};
  if (answer->status >= 500)
    return {AppState::degraded, fmt::format("answered {} (a server error)", answer->status)};
  if (answer->status != expect_status)
    return {AppState::down, fmt::format("answered {}, {} expected", answer->status, expect_status)};
  if (answer->elapsed > slow)
    return {AppState::degraded, fmt::format("slow: answered in {} (slow is over {})", format_duration(answer->elapsed),
                                            format_duration(slow))};
  return {AppState::up, {}};
}

std::optional<Clock::wall_time> parse_jupyter_time(std::string_view text) {
  std::string t(text);
  if (t.ends_with("+00:00")) t = t.substr(0, t.size() - 6) + "Z";
  return parse_iso8601(t);
}

namespace {

Result<void> note_activity(JupyterActivity& a, const json::object& item, std::string_view what, std::size_t i) {
  auto* la = item.if_contains("last_activity");
  if (!la || la->is_null()) return {};
  if (!la->is_string()) return Error{fmt::format("{}[{}].last_activity: not a string", what, i)};
  auto t = parse_jupyter_time(la->as_string());
  if (!t) return Error{fmt::format("{}[{}].last_activity: '{}' is not an ISO 8601 UTC time", what, i,
                                   std::string_view(la->as_string()).substr(0, 40))};
  if (!a.last || *t > *a.last) a.last = *t;
  return {};
}

}  // namespace

Result<void> add_kernels(JupyterActivity& a, const json::value& kernels) {
  if (!kernels.is_array()) return Error{"/api/kernels: not a list"};
  std::size_t i = 0;
  for (const auto& k : kernels.as_array()) {
    if (!k.is_object()) return Error{fmt::format("/api/kernels[{}]: not an object", i)};
    const auto& o = k.as_object();
    if (auto r = note_activity(a, o, "/api/kernels", i); !r) return r;
    ++a.kernels;
    if (auto* st = o.if_contains("execution_state"); st && st->is_string() && st->as_string() == "busy") ++a.busy;
    if (auto* c = o.if_contains("connections"); c && c->is_int64() && c->as_int64() > 0)
      a.connections += static_cast<std::size_t>(c->as_int64());
    ++i;
  }
  return {};
}

Result<void> add_terminals(JupyterActivity& a, const json::value& terminals) {
  if (!terminals.is_array()) return Error{"/api/terminals: not a list"};
  std::size_t i = 0;
  for (const auto& t : terminals.as_array()) {
    if (!t.is_object()) return Error{fmt::format("/api/terminals[{}]: not an object", i)};
    if (auto r = note_activity(a, t.as_object(), "/api/terminals", i); !r) return r;
    ++a.terminals;
    ++i;
  }
  return {};
}

}  // namespace instanced::apps
