// Probes of local applications: an HTTP GET and a WebSocket handshake on loopback, each
// bounded by a timeout, and the reading of Jupyter's REST answers (the documented JSON of
// /api/kernels and /api/terminals: jupyter-server's "REST API" page).
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/json/value.hpp>
#include <optional>
#include <string>

#include "common/clock.hpp"
#include "common/http_get.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"
#include "common/units.hpp"
#include "common/url.hpp"

namespace instanced::apps {

using instanced::HttpAnswer;

// GET url (http:// only) with `Authorization: token T` when a token is given.
boost::asio::awaitable<Result<HttpAnswer>> http_get(const Url& url, const Secret& token, Duration timeout,
                                                    std::size_t max_body = 1 << 20);

// A WebSocket opening handshake (101), closed again at once; the time it took.
boost::asio::awaitable<Result<Duration>> websocket_handshake(const Url& url, const Secret& token, Duration timeout);

enum class AppState { unknown, up, degraded, down };
std::string_view to_string(AppState s);

// One probe's verdict: up (the expected status within `slow`), degraded (the expected
// status but slow, or a 5xx), down (no answer, another status).
struct Verdict {
  AppState state = AppState::unknown;
  std::string reason;  // "" when up
};
Verdict judge(const Result<HttpAnswer>& answer, unsigned expect_status, Duration slow);

// What a Jupyter server says about its users' activity.
struct JupyterActivity {
  std::optional<Clock::wall_time> last;  // the newest last_activity of a kernel or terminal
  std::size_t kernels = 0;
  std::size_t busy = 0;         // kernels executing now
  std::size_t connections = 0;  // browser connections to kernels
  std::size_t terminals = 0;
};
// Adds /api/kernels' (a list of kernels) or /api/terminals' (a list of terminals) answer;
// the error names what did not match the documented form.
Result<void> add_kernels(JupyterActivity& a, const boost::json::value& kernels);
Result<void> add_terminals(JupyterActivity& a, const boost::json::value& terminals);

// Jupyter's timestamps: "2026-11-27T11:28:20.123456Z" or "...+00:00".
std::optional<Clock::wall_time> parse_jupyter_time(std::string_view text);

}  // namespace instanced::apps
