#include "agent/control/channel.hpp"
#include "common/build_info.hpp"
#include "common/message_ids.hpp"
#include "common/coro.hpp"
#include "common/tls.hpp"
#include "common/url.hpp"
#include "common/wake.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cmath>
#include <fmt/format.h>
#include <fstream>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

namespace instanced::control {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace http = beast::http;
namespace json = boost::json;
using tcp = asio::ip::tcp;

Result<Endpoint> parse_endpoint(std::string_view url, bool insecure_allowed) {
  if (url.starts_with("ws://") && !insecure_allowed)
    return Error{"control.endpoint: ws:// needs control.insecure: true (local development only)"};
  if (!url.starts_with("wss://") && !url.starts_with("ws://"))
    return Error{fmt::format("control.endpoint: '{}' must start with wss://", url)};
  auto u = parse_url(url);
  if (!u) return Error{"control.endpoint: " + u.error().message};
  Endpoint ep;
  ep.tls = u->tls;
  ep.host = std::move(u->host);
  ep.port = std::move(u->port);
  ep.target = std::move(u->target);
  return ep;
}

namespace {

// What the outbox holds in memory while its log cannot be written, and how often the
// write is tried again.
constexpr std::uint64_t kMaxHeldBytes = 4 << 20;
constexpr auto kHeldRetry = std::chrono::seconds(5);
constexpr auto kCommandsStop = std::chrono::seconds(2);  // for running commands to end at a stop
constexpr auto kCloseWait = std::chrono::seconds(1);     // for the control plane to answer our close frame

}  // namespace

Result<std::optional<Proxy>> channel_proxy(const Endpoint& ep, const std::string& control_proxy, const ProxyConfig& proxy) {
  if (control_proxy.empty()) return proxy_for(ep.host, ep.tls, proxy);
  // The channel's own proxy: proxy.credentials_file belongs to proxy.url's proxy, not to it.
  auto p = parse_proxy(control_proxy, {}, "control.proxy");
  if (!p) return p.error();
  return std::optional<Proxy>{std::move(*p)};
}

Result<Secret> read_token(const std::string& path) { return read_secret_file(path, "control.token_file"); }

ControlChannel::ControlChannel(asio::any_io_executor ex, Api& api, const ControlConfig& config, const ProxyConfig& proxy,
                               std::string state_dir, CommandRegistry& commands, const status::AgentInfo& info)
    : ex_(ex),
      api_(api),
      config_(config),
      proxy_(proxy),
      state_dir_(std::move(state_dir)),
      commands_(commands),
      info_(info),
      log_(api.logging.get("control")),
      commands_ended_(ex),
      acked_(ex) {}

ControlChannel::~ControlChannel() {
  if (subscription_) api_.state.unsubscribe(subscription_);
}

void ControlChannel::reconfigure(const ControlConfig& config, const ProxyConfig& proxy) {
  proxy_ = proxy;
  if (config.endpoint != config_.endpoint)
    log_->warn("control.endpoint changed; it takes effect at the next restart");
  auto endpoint = config_.endpoint;
  config_ = config;
  config_.endpoint = endpoint;
}

void ControlChannel::publish(Health h, std::string summary) {
  health_ = h;
  summary_ = summary;
  json::object d;
  d["state"] = state_;
  d["endpoint"] = config_.endpoint;
  d["connects"] = connects_;
  if (state_ == "connected") d["connected_at"] = iso8601(connected_at_);
  if (!last_error_.empty()) d["last_error"] = last_error_;
  if (outbox_) {
    d["outbox_pending"] = outbox_->pending().size();
    d["outbox_bytes"] = outbox_->pending_bytes();
    d["outbox_acked_seq"] = outbox_->acked();
    d["outbox_dropped"] = outbox_->dropped();
    d["outbox_held"] = outbox_->held();
    d["outbox_held_bytes"] = outbox_->held_bytes();
    d["outbox_held_dropped"] = outbox_->held_dropped();
  }
  api_.state.publish("control", h, std::move(summary), std::move(d));
}

Message ControlChannel::make(std::string type, json::object body) const {
  return Message{std::move(type), new_id(), std::nullopt, iso8601(api_.clock.wall_now()), std::move(body)};
}

void ControlChannel::wake() {
  if (wake_) wake_->pulse();
}

void ControlChannel::enqueue(Outbox::Kind kind, const std::string& type, json::object body) {
  if (!outbox_) return;
  Message m = make(type, std::move(body));
  m.seq = outbox_->next_seq();
  note_outbox(outbox_->append(kind, encode(m)));
  wake();
}

// What the outbox's writes did. A failure (the state folder full, read-only, failing) is
// logged once per episode, with the recovery; meanwhile messages are held in memory and
// still sent. The figures go to metrics and /v1/status.
void ControlChannel::note_outbox(const Result<void>& r) {
  auto& metrics = api_.state.metrics();
  if (!r) {
    metrics.add_counter("instanced_control_outbox_write_failures_total",
                        "Outbox writes that failed (the message was held in memory).", {});
    if (!outbox_failing_)
      log_->error("{}; events and results are held in memory (up to {}, oldest events dropped beyond) and sent, "
                  "and written once it can be (retried every {})",
                  r.error().message, human_size(kMaxHeldBytes), format_duration(kHeldRetry));
    outbox_failing_ = true;
  } else if (outbox_failing_ && outbox_->held() == 0) {
    log_->info("outbox: written again, nothing is held in memory ({} held events were dropped meanwhile)",
               outbox_->held_dropped());
    outbox_failing_ = false;
  }
  metrics.set_gauge("instanced_control_outbox_pending", "Events and results not yet acknowledged.", {},
                    static_cast<double>(outbox_->pending().size()));
  metrics.set_gauge("instanced_control_outbox_held", "Events and results held in memory only (not yet on disk).", {},
                    static_cast<double>(outbox_->held()));
  metrics.set_counter("instanced_control_outbox_held_dropped_total", "Held events dropped over the memory bound since start.",
                      {}, static_cast<double>(outbox_->held_dropped()));
  publish(health_, summary_);  // the outbox figures in /v1/status
}

namespace {
// A JSON string of internal text (subsystem names, states, ids): quotes, backslashes and
// control characters escaped, the rest as is.
void append_json_string(std::string& out, std::string_view v) {
  out.push_back('"');
  for (char c : v) {
    if (c == '"' || c == '\\') {
      out.push_back('\\');
      out.push_back(c);
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
    } else {
      out.push_back(c);
    }
  }
  out.push_back('"');
}
}  // namespace

// The heartbeat frame, written straight into a buffer kept between heartbeats: the same
// JSON as encode(make("heartbeat", heartbeat_body())) without building a tree (a
// heartbeat is the agent's most frequent message).
const std::string& ControlChannel::heartbeat_text(const std::string& id) {
  std::string& out = heartbeat_buffer_;
  out.clear();
  out += "{\"v\":1,\"type\":\"heartbeat\",\"id\":";
  append_json_string(out, id);
  out += ",\"ts\":";
  append_json_string(out, iso8601(api_.clock.wall_now()));
  out += ",\"body\":{\"state\":";
  append_json_string(out, to_string(api_.state.overall()));
  out += ",\"phase\":";
  append_json_string(out, info_.phase);
  out += ",\"subsystems\":{";
  bool first = true;
  for (const auto& [name, st] : api_.state.subsystems()) {
    if (!first) out.push_back(',');
    first = false;
    append_json_string(out, name);
    out.push_back(':');
    append_json_string(out, to_string(st.health));
  }
  out += "},\"uptime_s\":";
  fmt::format_to(std::back_inserter(out), "{}",
                 std::chrono::duration_cast<std::chrono::seconds>(api_.clock.now() - info_.started).count());
  out += ",\"config\":";
  append_json_string(out, std::string_view(info_.config_hash).substr(0, 12));
  for (const auto& [key, summary] : api_.state.heartbeat_summaries()) {
    out.push_back(',');
    append_json_string(out, key);
    out.push_back(':');
    out += summary;
  }
  out += "}}";
  return out;
}

json::object ControlChannel::heartbeat_body() const {
  json::object b;
  b["state"] = std::string(to_string(api_.state.overall()));
  b["phase"] = info_.phase;
  json::object subs;
  for (const auto& [name, s] : api_.state.subsystems()) subs[name] = std::string(to_string(s.health));
  b["subsystems"] = std::move(subs);
  b["uptime_s"] = std::chrono::duration_cast<std::chrono::seconds>(api_.clock.now() - info_.started).count();
  b["config"] = info_.config_hash.substr(0, 12);
  for (const auto& [key, summary] : api_.state.heartbeat_summaries()) b[key] = json::parse(summary);
  return b;
}

asio::awaitable<void> ControlChannel::run() {
  // Nothing is lost by stopping at once: what is not acknowledged waits in the outbox.
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  if (config_.endpoint.empty()) {
    state_ = "disabled";
    publish(Health::ok, "disabled (no control.endpoint)");
    co_return;
  }
  auto ep = parse_endpoint(config_.endpoint, config_.insecure);
  if (!ep) {
    state_ = "misconfigured";
    last_error_ = ep.error().message;
    publish(Health::failed, ep.error().message);
    co_return;
  }
  outbox_ = std::make_unique<Outbox>(std::filesystem::path(state_dir_) / "control" / "outbox",
                                     config_.outbox_max_bytes.bytes, kMaxHeldBytes);
  if (auto r = outbox_->open(); !r) {
    last_error_ = r.error().message;
    note_outbox(r);
  }
  if (auto interrupted = commands_.load(); !interrupted) {
    log_->warn("{}", interrupted.error().message);
  } else {
    for (const auto& id : *interrupted) report_interrupted(id);
  }
  // Every event of every subsystem goes to the control plane, through the outbox.
  subscription_ = api_.state.subscribe([this](const Event& e) {
    json::object body;
    body["subsystem"] = e.subsystem;
    body["type"] = e.type;
    body["message"] = e.message;
    body["time"] = iso8601(e.time);
    if (!e.data.empty()) body["data"] = e.data;
    enqueue(Outbox::Kind::event, "event", std::move(body));
  });
  try {
    co_await connect_loop(*ep);
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) throw;
  }
  // Stopping: what is not acknowledged waits in the outbox; running commands end.
  co_await asio::this_coro::reset_cancellation_state(ignore_cancellation);
  co_await stop_commands();
}

// Connects, converses until the connection ends, and reconnects with backoff, until
// cancelled.
asio::awaitable<void> ControlChannel::connect_loop(const Endpoint& ep) {
  std::random_device rd;
  Backoff backoff(config_.backoff_initial, config_.backoff_max, (std::uint64_t{rd()} << 32) | rd());
  state_ = "connecting";
  publish(Health::starting, "connecting to " + config_.endpoint);
  // Spread a fleet's first connects after a mass boot.
  if (config_.initial_delay_max.count() > 0) co_await api_.clock.sleep_for(backoff.draw(config_.initial_delay_max));
  for (;;) {
    auto started = api_.clock.now();
    if (outbox_failing_) note_outbox(outbox_->retry());
    last_error_ = (co_await connect_once(ep)).message;
    // Stopping: the daemon cancelled us; do not reconnect.
    if ((co_await asio::this_coro::cancellation_state).cancelled() != asio::cancellation_type::none) co_return;
    if (api_.clock.now() - started >= config_.backoff_reset_after) backoff.reset();
    Duration delay = backoff.next();
    // Once a connection has existed, every outage began with it dropping, perhaps for the
    // whole fleet at once (a control-plane restart): every retry is spread over
    // reconnect_spread, so retries that failed while the control plane was away do not
    // pile up at the moment it returns.
    if (connects_ > 0 && config_.reconnect_spread.count() > 0)
      delay = backoff.draw(std::max(config_.reconnect_spread, delay));
    if (state_ == "connected" || !down_since_) down_since_ = api_.clock.now();  // the outage starts
    state_ = "disconnected";
    log_->warn("control channel to {}: {}; retrying in {} ms", config_.endpoint, last_error_, delay.count());
    publish(Health::degraded, fmt::format("disconnected: {}; retry in {}", last_error_, format_duration(delay)));
    co_await api_.clock.sleep_for(delay);
    state_ = "connecting";
  }
}

asio::awaitable<bool> ControlChannel::wait_delivered(Clock::steady_time::duration limit) {
  const auto until = api_.clock.now() + limit;
  while (outbox_ && !outbox_->pending().empty()) {
    if (api_.clock.now() >= until) co_return false;
    // Until the next ack (it pulses acked_) or the limit, on the agent's clock.
    co_await acked_.sleep_until(api_.clock, until);
  }
  co_return outbox_ != nullptr;
}

// One connection attempt and, when it succeeds, the connection: returns what ended it. How a
// connection fails or ends is expected (docs/error-policy.md), so each step's failure is a
// value (an I/O step's error code, redirected); only the agent's stop is thrown. The token
// is read afresh each time (it may have been rotated).
asio::awaitable<Error> ControlChannel::connect_once(const Endpoint& ep) {
  if (inventory_) {
    auto asking = inventory_();
    inventory_now_ = co_await std::move(asking);
  }
  auto token = read_token(config_.token_file);
  if (!token) co_return token.error();
  auto proxy = channel_proxy(ep, config_.proxy, proxy_);
  if (!proxy) co_return proxy.error();
  if (ep.tls) co_return co_await connect_tls(ep, *token, *proxy);
  websocket::stream<beast::tcp_stream> ws(ex_);
  auto dialled = co_await dial(beast::get_lowest_layer(ws), ep, *proxy);
  if (!dialled) co_return dialled.error();
  co_return co_await upgrade(ws, ep, *token);
}

// wss://: TLS 1.2 or later, the peer verified against the system's CAs or control.ca_file.
asio::awaitable<Error> ControlChannel::connect_tls(const Endpoint& ep, const Secret& token, const std::optional<Proxy>& proxy) {
  boost::system::error_code ec;
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  if (auto trusted = tls::verify_peers(ctx, config_.ca_file, "control.ca_file"); !trusted) co_return trusted.error();
  // A trusted certificate for another name fails as "certificate verify failed": the names
  // it is for are kept, to say so.
  std::string other_names;
  websocket::stream<beast::ssl_stream<beast::tcp_stream>> ws(ex_, ctx);
  if (!SSL_set_tlsext_host_name(ws.next_layer().native_handle(), ep.host.c_str()))
    co_return Error{"cannot set SNI host name " + ep.host};
  ws.next_layer().set_verify_callback(
      [&other_names, check = asio::ssl::host_name_verification(ep.host)](bool preverified, asio::ssl::verify_context& vc) {
        const bool ok = check(preverified, vc);
        if (preverified && !ok && X509_STORE_CTX_get_error_depth(vc.native_handle()) == 0)
          other_names = tls::certificate_names(X509_STORE_CTX_get_current_cert(vc.native_handle()));
        return ok;
      });
  auto dialled = co_await dial(beast::get_lowest_layer(ws), ep, proxy);
  if (!dialled) co_return dialled.error();
  co_await ws.next_layer().async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
  if (ec && !other_names.empty())
    co_return Error{fmt::format("the control plane's certificate is not for {} (it is for {}): certificate verify failed",
                                ep.host, other_names)};
  if (ec) co_return Error{ec.message()};
  co_return co_await upgrade(ws, ep, token);
}

// TCP to the control plane or the proxy, under the connect timeout; through an HTTP CONNECT
// proxy the tunnel is opened first (TLS and WebSocket run inside it).
asio::awaitable<Result<void>> ControlChannel::dial(beast::tcp_stream& stream, const Endpoint& ep,
                                                   const std::optional<Proxy>& proxy) {
  stream.expires_after(config_.connect_timeout);
  auto dialling = instanced::dial(stream, ep.host, ep.port, proxy);
  co_return co_await std::move(dialling);
}

// The WebSocket upgrade with the bearer token and subprotocol, then the conversation.
template <class WebSocket>
asio::awaitable<Error> ControlChannel::upgrade(WebSocket& ws, const Endpoint& ep, const Secret& token) {
  beast::get_lowest_layer(ws).expires_never();
  websocket::stream_base::timeout t;
  t.handshake_timeout = config_.connect_timeout;
  // Beast pings after half the idle timeout of silence and gives up at the full one:
  // a dead peer is noticed within two ping intervals.
  t.idle_timeout = config_.ping_interval * 2;
  t.keep_alive_pings = true;
  ws.set_option(t);
  ws.read_message_max(config_.max_message_bytes.bytes);
  ws.text(true);
  ws.set_option(websocket::stream_base::decorator([bearer = "Bearer " + token.reveal()](websocket::request_type& req) {
    req.set(http::field::authorization, bearer);
    req.set(http::field::sec_websocket_protocol, kSubprotocol);
    req.set(http::field::user_agent, std::string("instanced/") + build_version());
  }));
  websocket::response_type res;
  boost::system::error_code ec;
  co_await ws.async_handshake(res, host_port(ep.host, ep.port), ep.target, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{ec.message()};
  if (res[http::field::sec_websocket_protocol] != kSubprotocol)
    co_return Error{"the control plane did not accept subprotocol instanced.v1"};
  co_return co_await converse(ws);
}

// One connection, top to bottom: hello, then a reader beside the writer until either ends,
// then the close. Returns what ended it.
template <class WebSocket>
asio::awaitable<Error> ControlChannel::converse(WebSocket& ws) {
  on_connected();
  const std::string hello = hello_text();
  boost::system::error_code ec;
  co_await ws.async_write(asio::buffer(hello), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{ec.message()};
  Wake wake(ex_);
  wake_ = &wake;
  sent_up_to_ = outbox_->acked();
  ReaderState reader;
  auto frames = read_frames(ws, reader);
  asio::co_spawn(ex_, std::move(frames), [&reader, &wake](std::exception_ptr e) {
    if (e) reader.error = describe(e);
    reader.done = true;
    wake.pulse();
  });
  std::string failure;
  try {
    auto written = co_await write_until_end(ws, wake, reader);
    if (!written) failure = written.error().message;
  } catch (const boost::system::system_error& e) {
    failure = e.code().message();  // the agent stops: the writer's sleep was cancelled
  }
  wake_ = nullptr;
  // From here on nothing may throw for the agent's stop: the reader must be waited for. The
  // flag is the coroutine thread's: a co_await of end_connection() would throw without it.
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await end_connection(ws, wake, reader);
  co_return Error{!failure.empty() ? failure : reader.error.empty() ? "connection closed" : reader.error};
}

void ControlChannel::on_connected() {
  ++connects_;
  if (down_since_ && connects_ > 1) {
    // Told after the fact (the event goes out on this connection): how long, and why.
    const double down = std::chrono::duration<double>(api_.clock.now() - *down_since_).count();
    api_.state.emit("control", "reconnected",
                    fmt::format("reconnected after {:.1f}s cut off from the control plane: {}", down, last_error_),
                    {{"down_seconds", std::round(down * 1000) / 1000}, {"reason", last_error_}});  // to the ms: a short cut is not 0
  }
  down_since_.reset();
  connected_at_ = api_.clock.wall_now();
  state_ = "connected";
  last_error_.clear();
  publish(Health::ok, "connected to " + config_.endpoint);
  LogFields fields{{"MESSAGE_ID", msgid::kControlConnected}};
  log_->info("control channel connected to {}", config_.endpoint);
}

std::string ControlChannel::hello_text() const {
  json::object hello;
  hello["instance"] = info_.instance;
  hello["agent_version"] = info_.version;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::string boot_id;
  std::getline(in, boot_id);
  hello["boot_id"] = boot_id;
  json::array caps;
  for (const auto& n : commands_.names()) caps.emplace_back(n);
  hello["capabilities"] = std::move(caps);
  hello["config_hash"] = info_.config_hash;
  hello["outbox"] = json::object{{"acked", outbox_->acked()},
                                 {"next", outbox_->next_seq()},
                                 {"held", outbox_->held()},
                                 {"dropped", outbox_->dropped() + outbox_->held_dropped()}};
  if (!inventory_now_.empty()) hello["inventory"] = inventory_now_;
  return encode(make("hello", std::move(hello)));
}

// The reader: every frame from the control plane, until the connection ends (why, in
// `reader.error`).
template <class WebSocket>
asio::awaitable<void> ControlChannel::read_frames(WebSocket& ws, ReaderState& reader) {
  beast::flat_buffer buffer;
  boost::system::error_code ec;
  for (;;) {
    buffer.clear();
    co_await ws.async_read(buffer, asio::redirect_error(asio::use_awaitable, ec));
    if (ec) {
      reader.error = ec.message();
      co_return;
    }
    handle_frame(beast::buffers_to_string(buffer.data()));
  }
}

void ControlChannel::handle_frame(const std::string& frame) {
  const Limits limits{config_.max_message_bytes.bytes, static_cast<unsigned>(config_.max_json_depth)};
  Message partial;
  auto m = decode(frame, limits, &partial);
  if (!m) {
    // A command whose id could be read is answered (a control plane waits for it);
    // anything else is only counted and logged.
    const bool answerable = partial.type == "command" && !partial.id.empty();
    log_->warn("control plane sent an invalid message{}: {}",
               answerable ? fmt::format(" (command {}, answered invalid)", partial.id) : "", m.error().message);
    api_.state.metrics().add_counter("instanced_control_invalid_messages_total",
                                     "Messages from the control plane that were refused.",
                                     {{"answered", answerable ? "yes" : "no"}});
    if (answerable) answer(partial.id, "", {Status::invalid, {}, m.error().message});
  } else if (m->type == "ack") {
    handle_ack(*m);
  } else if (m->type == "command") {
    spawn_command(std::move(*m));
  } else {
    log_->warn("control plane sent a message of unknown type '{}'", m->type);
  }
}

void ControlChannel::handle_ack(const Message& m) {
  // An ack of the last heartbeat times the round trip.
  if (auto* hb = m.body.if_contains("heartbeat"); hb && hb->is_string() && hb->as_string() == heartbeat_id_) {
    heartbeat_rtt_ = api_.clock.now() - heartbeat_sent_;
    heartbeat_id_.clear();
    if (!heartbeat_rtt_seconds_)
      heartbeat_rtt_seconds_ = &api_.state.metrics().sample("instanced_control_heartbeat_rtt_seconds",
                                                            "Round trip of the last acknowledged heartbeat.",
                                                            Metrics::Type::gauge);
    *heartbeat_rtt_seconds_ = std::chrono::duration<double>(*heartbeat_rtt_).count();
  }
  auto* seq = m.body.if_contains("seq");
  if (seq && (seq->is_uint64() || (seq->is_int64() && seq->as_int64() >= 0))) {
    auto s = seq->is_uint64() ? seq->as_uint64() : static_cast<std::uint64_t>(seq->as_int64());
    note_outbox(outbox_->ack(s));  // and the figures in /v1/status
    acked_.pulse();                 // wait_delivered() looks again
  }
}

// The writer: the outbox (replayed, paced to replay_per_second) and heartbeats, until the
// reader ends, the agent stops, or a write fails.
template <class WebSocket>
asio::awaitable<Result<void>> ControlChannel::write_until_end(WebSocket& ws, Wake& wake, const ReaderState& reader) {
  auto next_heartbeat = api_.clock.now();
  boost::system::error_code ec;
  while (!reader.done) {
    if (outbox_failing_) note_outbox(outbox_->retry());
    const auto rate = static_cast<std::size_t>(config_.replay_per_second);
    std::size_t sent = 0;
    for (const auto& e : outbox_->pending()) {
      if (e.seq <= sent_up_to_) continue;
      if (sent >= rate) break;
      std::string payload = e.payload;
      co_await ws.async_write(asio::buffer(payload), asio::redirect_error(asio::use_awaitable, ec));
      if (ec) co_return Error{ec.message()};
      sent_up_to_ = std::max(sent_up_to_, e.seq);
      ++sent;
    }
    if (api_.clock.now() >= next_heartbeat) {
      auto sent_heartbeat = co_await send_heartbeat(ws);
      if (!sent_heartbeat) co_return sent_heartbeat;
      next_heartbeat = coalesced(api_.clock.now() + config_.heartbeat_interval, config_.heartbeat_interval);
    }
    // Refresh the outbox figures in /v1/status only when something was sent.
    if (sent > 0) publish(Health::ok, "connected to " + config_.endpoint);
    auto until = next_heartbeat;
    if (sent >= rate) until = std::min(until, api_.clock.now() + std::chrono::seconds(1));
    if (outbox_failing_) until = std::min(until, api_.clock.now() + kHeldRetry);
    co_await wake.sleep_until(api_.clock, until);
  }
  co_return Result<void>{};
}

template <class WebSocket>
asio::awaitable<Result<void>> ControlChannel::send_heartbeat(WebSocket& ws) {
  heartbeat_id_ = new_id();
  heartbeat_sent_ = api_.clock.now();
  const std::string& hb = heartbeat_text(heartbeat_id_);
  boost::system::error_code ec;
  co_await ws.async_write(asio::buffer(hb), asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{ec.message()};
  if (!heartbeats_total_)
    heartbeats_total_ =
        &api_.state.metrics().sample("instanced_control_heartbeats_total", "Heartbeats sent.", Metrics::Type::counter);
  *heartbeats_total_ += 1;
  co_return Result<void>{};
}

// Ends the connection and waits for the reader to notice: it refers to `ws`, so it must be
// finished before the connection's frame goes, even when the agent is stopping (the caller
// has turned throw_if_cancelled off).
template <class WebSocket>
asio::awaitable<void> ControlChannel::end_connection(WebSocket& ws, Wake& wake, const ReaderState& reader) {
  auto cs = co_await asio::this_coro::cancellation_state;
  const bool stopping = cs.cancelled() != asio::cancellation_type::none;
  if (stopping && !reader.done) {
    // The agent stops: say so (1001, going away), and wait a moment for the answer.
    auto closing = ws.async_close(websocket::close_reason(websocket::close_code::going_away, "agent stopping"),
                                  asio::use_awaitable);
    auto limit = api_.clock.sleep_for(kCloseWait);
    try {
      using namespace asio::experimental::awaitable_operators;
      auto either = std::move(closing) || std::move(limit);
      co_await first_error(std::move(either));
    } catch (const std::exception&) {
      // Closed already, or the peer is gone: the socket is closed below anyway.
    }
  }
  boost::system::error_code ignored;
  beast::get_lowest_layer(ws).socket().close(ignored);
  // The reader sees the closed socket at once and, on its way out, pulses `wake`.
  while (!reader.done) co_await wake.wait_through_cancellation();
}

asio::awaitable<void> ControlChannel::handle_command(Message m) {
  auto command = command_of(m);
  if (!command) {
    answer(m.id, "", {Status::invalid, {}, command.error().message});
    co_return;
  }
  const auto started = api_.clock.now();
  auto r = co_await commands_.execute(*command);
  // Unknown names (unsupported) share one series: the control plane cannot grow the metrics.
  const std::string label = r.status == Status::unsupported ? "unsupported" : command->name;
  api_.state.metrics().observe("instanced_control_command_duration_seconds", "How long commands took, by name and status",
                               {{"command", label}, {"status", std::string(to_string(r.status))}},
                               std::chrono::duration<double>(api_.clock.now() - started).count(), kLatencyBuckets);
  answer(m.id, command->name, std::move(r));
}

void ControlChannel::answer(const std::string& id, const std::string& name, CommandResult r) {
  json::object body;
  body["command_id"] = id;
  body["name"] = name;
  body["status"] = std::string(to_string(r.status));
  if (!r.result.empty()) body["result"] = std::move(r.result);
  if (!r.error.empty()) body["error"] = r.error;
  enqueue(Outbox::Kind::result, "result", std::move(body));
}

// A command that had started when the agent last stopped: its end is reported once, now.
void ControlChannel::report_interrupted(const std::string& id) {
  auto stored = commands_.stored(id);
  if (!stored) return;
  log_->warn("command {} ({}) was running when the agent stopped: answered interrupted", id, stored->first);
  answer(id, stored->first, stored->second);
}

// Commands run beside the connection (a reconnect does not end them), inside the channel's
// cancellation tree: the agent's stop cancels them, and they stay recorded as started.
void ControlChannel::spawn_command(Message m) {
  const std::uint64_t key = ++command_keys_;
  auto& signal = running_commands_[key];
  signal = std::make_unique<asio::cancellation_signal>();
  asio::co_spawn(ex_, handle_command(std::move(m)),
                 asio::bind_cancellation_slot(signal->slot(), [this, key](std::exception_ptr e) {
                   if (e && !is_cancellation(e)) log_->error("command: {}", describe(e));
                   // Not from inside the handler that the signal belongs to.
                   asio::post(ex_, [this, key] {
                     running_commands_.erase(key);
                     commands_ended_.pulse();
                   });
                 }));
}

// The agent is stopping: running commands are cancelled and waited for (each ends at its
// next await), bounded.
asio::awaitable<void> ControlChannel::stop_commands() {
  for (auto& [key, signal] : running_commands_) signal->emit(asio::cancellation_type::terminal);
  const auto until = api_.clock.now() + kCommandsStop;
  while (!running_commands_.empty() && api_.clock.now() < until) co_await commands_ended_.sleep_until(api_.clock, until);
  if (!running_commands_.empty())
    log_->warn("{} commands did not end within {} of the stop", running_commands_.size(), format_duration(kCommandsStop));
}

}  // namespace instanced::control
