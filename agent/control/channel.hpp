// The control channel: one outbound WebSocket (wss://, or ws:// when `insecure`) to the
// control plane. One coroutine per connection reads top to bottom: resolve, connect,
// TLS, upgrade with the bearer token and subprotocol instanced.v1, hello, then a reader
// (commands, acks) and a writer (outbox replay, heartbeats) until the connection ends;
// then backoff with full jitter and again. Events and results pass through the outbox.
#pragma once

#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/steady_timer.hpp>
#include <exception>
#include <functional>
#include <map>
#include <memory>
#include <optional>

#include "agent/control/backoff.hpp"
#include "agent/control/commands.hpp"
#include "agent/control/config.hpp"
#include "agent/control/outbox.hpp"
#include "agent/status/views.hpp"
#include "common/api.hpp"
#include "common/proxy.hpp"
#include "common/secret.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::control {

struct Endpoint {
  bool tls = true;
  std::string host;
  std::string port;
  std::string target;
};
// "wss://cp.example.net:8443/v1/agent" → parts; errors name what is wrong.
Result<Endpoint> parse_endpoint(std::string_view url, bool insecure_allowed);

// The proxy for the control plane at `ep`: control.proxy (the channel's own, older key)
// if set, else the agent's one proxy setting.
Result<std::optional<Proxy>> channel_proxy(const Endpoint& ep, const std::string& control_proxy, const ProxyConfig& proxy);

// The token file: must exist, be a regular file of mode 0600 or 0400, and be non-empty.
Result<Secret> read_token(const std::string& path);

class ControlChannel final : public Subsystem {
 public:
  ControlChannel(boost::asio::any_io_executor ex, Api& api, const ControlConfig& config, const ProxyConfig& proxy,
                 std::string state_dir, CommandRegistry& commands, const status::AgentInfo& info);
  ~ControlChannel() override;
  std::string name() const override { return "control"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `control` section (the endpoint is kept until the next start) and `proxy`.
  void reconfigure(const ControlConfig& config, const ProxyConfig& proxy);

  // The compact heartbeat body (also used by tests and the fleet benchmark).
  boost::json::object heartbeat_body() const;
  // The whole heartbeat frame with this id, the same JSON as the body in the envelope.
  const std::string& heartbeat_text(const std::string& id);
  // Until everything in the outbox (events, results) has been acknowledged by the control
  // plane, at most `limit`: true when it was. What is not stays in the outbox for the next
  // connection (after a reboot too).
  boost::asio::awaitable<bool> wait_delivered(Clock::steady_time::duration limit);
  // What `hello` carries as `inventory` (docs/protocol.md): asked before each connection
  // attempt (the source bounds itself). Without one, hello has none.
  using InventorySource = std::function<boost::asio::awaitable<boost::json::object>()>;
  void set_inventory(InventorySource source) { inventory_ = std::move(source); }
  // Round trip of the last heartbeat the control plane acknowledged, if it does.
  std::optional<Clock::steady_time::duration> heartbeat_rtt() const { return heartbeat_rtt_; }

 private:
  boost::asio::awaitable<Error> connect_once(const Endpoint& ep);
  boost::asio::awaitable<Error> connect_tls(const Endpoint& ep, const Secret& token, const std::optional<Proxy>& proxy);
  boost::asio::awaitable<Result<void>> dial(boost::beast::tcp_stream& stream, const Endpoint& ep,
                                            const std::optional<Proxy>& proxy);
  template <class WebSocket>
  boost::asio::awaitable<Error> upgrade(WebSocket& ws, const Endpoint& ep, const Secret& token);
  template <class WebSocket>
  boost::asio::awaitable<Error> converse(WebSocket& ws);
  // The reader of one connection, as its writer sees it.
  struct ReaderState {
    bool done = false;
    std::string error;  // what ended it
  };
  void on_connected();
  std::string hello_text() const;
  template <class WebSocket>
  boost::asio::awaitable<void> read_frames(WebSocket& ws, ReaderState& reader);
  void handle_frame(const std::string& frame);
  void handle_ack(const Message& m);
  template <class WebSocket>
  boost::asio::awaitable<Result<void>> write_until_end(WebSocket& ws, Wake& wake, const ReaderState& reader);
  template <class WebSocket>
  boost::asio::awaitable<Result<void>> send_heartbeat(WebSocket& ws);
  template <class WebSocket>
  boost::asio::awaitable<void> end_connection(WebSocket& ws, Wake& wake, const ReaderState& reader);
  boost::asio::awaitable<void> handle_command(Message m);
  void answer(const std::string& id, const std::string& name, CommandResult r);
  void report_interrupted(const std::string& id);
  void spawn_command(Message m);
  boost::asio::awaitable<void> stop_commands();
  boost::asio::awaitable<void> connect_loop(const Endpoint& ep);
  void enqueue(Outbox::Kind kind, const std::string& type, boost::json::object body);
  void note_outbox(const Result<void>& r);
  Message make(std::string type, boost::json::object body) const;
  void publish(Health h, std::string summary);
  void wake();

  boost::asio::any_io_executor ex_;
  Api& api_;
  ControlConfig config_;
  ProxyConfig proxy_;
  std::string state_dir_;
  CommandRegistry& commands_;
  const status::AgentInfo& info_;
  Logger log_;
  std::unique_ptr<Outbox> outbox_;
  std::map<std::uint64_t, std::unique_ptr<boost::asio::cancellation_signal>> running_commands_;
  std::uint64_t command_keys_ = 0;
  Wake commands_ended_;  // pulsed when a command ends
  Wake acked_;  // pulsed at every ack of the outbox (wait_delivered)
  bool outbox_failing_ = false;  // an episode of outbox write errors (logged once) is under way
  std::uint64_t subscription_ = 0;
  Wake* wake_ = nullptr;  // the live connection's writer, if any
  std::uint64_t sent_up_to_ = 0;                // highest outbox seq written on this connection
  std::string state_ = "starting";
  Health health_ = Health::starting;  // what publish() said last
  std::string summary_;
  std::string last_error_;
  std::optional<Clock::steady_time> down_since_;  // no connection since then (after one existed, or from the start)
  std::uint64_t connects_ = 0;
  Clock::wall_time connected_at_{};
  std::string heartbeat_id_;  // the heartbeat awaiting its ack
  std::string heartbeat_buffer_;
  double* heartbeats_total_ = nullptr;      // metric samples updated per heartbeat
  double* heartbeat_rtt_seconds_ = nullptr;
  Clock::steady_time heartbeat_sent_{};
  std::optional<Clock::steady_time::duration> heartbeat_rtt_;
  InventorySource inventory_;
  boost::json::object inventory_now_;  // for the next hello
};

}  // namespace instanced::control
