// instanced-devcp: the development control plane. A small reference server for the
// control channel's protocol v1 (docs/protocol.md), sharing the agent's protocol code.
// It accepts agents over ws:// or wss://, checks their bearer token and subprotocol,
// prints every message as a JSON line, acknowledges events and results, keeps the last
// state of every instance, and lets a person send commands through a tiny HTTP API:
//
//   GET  /v1/instances                       every instance: hello, last heartbeat, results
//   POST /v1/instances/NAME/commands         {"name":"ping","args":{},"id":"…","deadline":"…"}
//
// With --files DIR, the agents' listener (https with --tls-cert) also serves DIR's files:
// GET /v1/files/NAME, for update_agent's packages.
//
// Not a production control plane: one process, state in memory.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <boost/beast/websocket.hpp>
#include <boost/beast/websocket/ssl.hpp>
#include <boost/json.hpp>
#include <deque>
#include <fmt/format.h>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <optional>

#include "agent/control/protocol.hpp"
#include "common/clock.hpp"

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace json = boost::json;
using tcp = asio::ip::tcp;
using namespace instanced;

namespace {

struct Options {
  std::string listen = "127.0.0.1:0";
  std::string api = "127.0.0.1:0";
  std::string token_file;
  std::string tls_cert, tls_key;
  std::string ports_file;
  std::string tls_max;  // "1.1": a deliberately outdated server; "1.2": no TLS 1.3 (the agent's TLS tests)
  bool ack = true;
  bool heartbeat_ack = true;  // --no-heartbeat-ack: heartbeats go unanswered
  bool quiet = false;
  bool freeze = false;  // after hello, read nothing more: no pongs (a hung peer, for tests)
  std::string files;    // served as GET /v1/files/NAME on the agents' listener
};

struct Instance {
  json::object hello;
  json::object heartbeat;
  json::object results;  // command id -> result body
  std::uint64_t events = 0;
  std::deque<json::object> recent_events;  // the last 50 event bodies
  std::uint64_t heartbeats = 0;
  std::string tls;  // the protocol of the connection that said hello: "TLSv1.3", or "none"
  std::uint64_t connects = 0;
  std::uint64_t last_seq = 0;
  std::uint64_t duplicates = 0;  // resent messages whose seq was already seen
  bool connected = false;
  json::object last_close;  // how the last connection ended: {"code","reason"} or {"error"}
  std::function<void(std::string)> send;  // to the live connection
};

class Server {
 public:
  Server(asio::io_context& ioc, Options o) : ioc_(ioc), o_(std::move(o)) {
    std::ifstream in(o_.token_file);
    std::getline(in, token_);
    if (!o_.tls_cert.empty()) {
      ssl_.emplace(asio::ssl::context::tls_server);
      ssl_->use_certificate_chain_file(o_.tls_cert);
      ssl_->use_private_key_file(o_.tls_key, asio::ssl::context::pem);
      if (o_.tls_max == "1.1") {
        SSL_CTX_set_security_level(ssl_->native_handle(), 0);
        SSL_CTX_set_min_proto_version(ssl_->native_handle(), TLS1_1_VERSION);
        SSL_CTX_set_max_proto_version(ssl_->native_handle(), TLS1_1_VERSION);
      } else if (o_.tls_max == "1.2") {
        SSL_CTX_set_max_proto_version(ssl_->native_handle(), TLS1_2_VERSION);
      }
    }
  }

  asio::awaitable<void> agents(tcp::acceptor acceptor) {
    for (;;) {
      auto sock = co_await acceptor.async_accept(asio::use_awaitable);
      asio::co_spawn(ioc_, agent_session(std::move(sock)), asio::detached);
    }
  }

  asio::awaitable<void> api(tcp::acceptor acceptor) {
    for (;;) {
      auto sock = co_await acceptor.async_accept(asio::use_awaitable);
      asio::co_spawn(ioc_, api_session(std::move(sock)), asio::detached);
    }
  }

 private:
  void print(const std::string& instance, const std::string& line) {
    if (o_.quiet) return;
    std::cout << "{\"instance\":" << json::serialize(json::value(instance)) << ",\"message\":" << line << "}\n"
              << std::flush;
  }

  template <class Stream>
  asio::awaitable<void> upgrade_and_serve(Stream& stream, std::string tls) {
    beast::flat_buffer buffer;
    http::request<http::string_body> req;
    co_await http::async_read(stream, buffer, req, asio::use_awaitable);
    auto refuse = [&](http::status st, std::string why) -> asio::awaitable<void> {
      http::response<http::string_body> res{st, 11};
      res.body() = why + "\n";
      res.prepare_payload();
      co_await http::async_write(stream, res, asio::use_awaitable);
    };
    if (!websocket::is_upgrade(req)) {
      if (!o_.files.empty() && req.method() == http::verb::get && std::string(req.target()).starts_with("/v1/files/")) {
        co_await serve_file(stream, std::string(req.target()).substr(10));
        co_return;
      }
      co_await refuse(http::status::bad_request, "expected a WebSocket upgrade");
      co_return;
    }
    if (req[http::field::authorization] != "Bearer " + token_) {
      std::cerr << "devcp: refused an agent with a wrong or missing token\n";
      co_await refuse(http::status::unauthorized, "bad token");
      co_return;
    }
    if (std::string(req[http::field::sec_websocket_protocol]).find(control::kSubprotocol) == std::string::npos) {
      co_await refuse(http::status::bad_request, "subprotocol instanced.v1 required");
      co_return;
    }
    websocket::stream<Stream&> ws(stream);
    ws.set_option(websocket::stream_base::decorator(
        [](websocket::response_type& res) { res.set(http::field::sec_websocket_protocol, control::kSubprotocol); }));
    ws.read_message_max(1 << 20);
    co_await ws.async_accept(req, asio::use_awaitable);
    ws.text(true);
    co_await serve(ws, tls);  // a copy: clang-tidy 14 misreads a move across the co_awaits above
  }

  // One of --files' files by its plain name (no folder), 404 otherwise.
  template <class Stream>
  asio::awaitable<void> serve_file(Stream& stream, std::string name) {
    const auto path = std::filesystem::path(o_.files) / name;
    beast::error_code ec;
    http::file_body::value_type body;
    if (name.empty() || name.find('/') != std::string::npos || name.starts_with(".")) ec = beast::errc::make_error_code(beast::errc::invalid_argument);
    else body.open(path.c_str(), beast::file_mode::scan, ec);
    if (ec) {
      http::response<http::string_body> res{http::status::not_found, 11};
      res.body() = "no such file\n";
      res.prepare_payload();
      co_await http::async_write(stream, res, asio::use_awaitable);
      co_return;
    }
    std::cerr << "devcp: serving " << path.string() << "\n";
    http::response<http::file_body> res{http::status::ok, 11};
    res.set(http::field::content_type, "application/vnd.debian.binary-package");
    res.body() = std::move(body);
    res.prepare_payload();
    co_await http::async_write(stream, res, asio::use_awaitable);
  }

  template <class WS>
  asio::awaitable<void> serve(WS& ws, std::string tls) {
    std::string name;
    std::deque<std::string> outq;
    bool writing = false;
    bool open = true;
    auto ex = co_await asio::this_coro::executor;
    // One writer at a time: messages queue and a writer drains them.
    auto writer = [&]() -> asio::awaitable<void> {
      writing = true;
      while (!outq.empty() && open) {
        std::string msg = std::move(outq.front());
        outq.pop_front();
        boost::system::error_code ec;
        co_await ws.async_write(asio::buffer(msg), asio::redirect_error(asio::use_awaitable, ec));
        if (ec) break;
      }
      writing = false;
    };
    auto send = [&](std::string msg) {
      outq.push_back(std::move(msg));
      if (!writing) asio::co_spawn(ex, writer(), asio::detached);
    };
    const control::Limits limits;
    beast::flat_buffer buffer;
    try {
      for (;;) {
        buffer.clear();
        co_await ws.async_read(buffer, asio::use_awaitable);
        std::string text = beast::buffers_to_string(buffer.data());
        auto m = control::decode(text, limits);
        if (!m) {
          std::cerr << "devcp: invalid message: " << m.error().message << "\n";
          continue;
        }
        if (m->type == "hello") {
          auto* inst = m->body.if_contains("instance");
          name = inst && inst->is_string() ? std::string(inst->as_string()) : "unknown";
          auto& i = instances_[name];
          i.hello = m->body;
          i.tls = tls;
          i.connected = true;
          ++i.connects;
          i.send = send;
          if (o_.freeze) {
            print(name, text);
            asio::steady_timer forever(ex, asio::steady_timer::time_point::max());
            co_await forever.async_wait(asio::use_awaitable);
          }
        }
        print(name, text);
        if (name.empty()) continue;
        auto& i = instances_[name];
        if (m->type == "heartbeat") {
          i.heartbeat = m->body;
          ++i.heartbeats;
          // Acknowledging heartbeats lets the agent time the round trip, and keeps the
          // connection's read side busy so no keep-alive pings are needed.
          if (o_.heartbeat_ack) {
            control::Message ack{"ack", control::new_id(), std::nullopt, iso8601(std::chrono::system_clock::now()),
                                 json::object{{"heartbeat", m->id}}};
            send(control::encode(ack));
          }
        } else if (m->type == "event" || m->type == "result") {
          if (m->seq && *m->seq <= i.last_seq) ++i.duplicates;
          if (m->seq) i.last_seq = std::max(i.last_seq, *m->seq);
          if (m->type == "event") {
            ++i.events;
            i.recent_events.push_back(m->body);
            if (i.recent_events.size() > 50) i.recent_events.pop_front();
          }
          if (m->type == "result") {
            auto* id = m->body.if_contains("command_id");
            if (id && id->is_string()) {
              auto& slot = i.results[id->as_string()];
              // Count how often a result for the same command id arrived (resends).
              json::object r = m->body;
              r["received"] = slot.is_object() && slot.as_object().contains("received")
                                  ? slot.as_object().at("received").as_int64() + 1
                                  : 1;
              // Every answer's status and error, in order (a resent command's answers differ?).
              json::array statuses;
              if (slot.is_object() && slot.as_object().contains("statuses"))
                statuses = slot.as_object().at("statuses").as_array();
              json::object st{{"status", m->body.contains("status") ? m->body.at("status") : json::value()}};
              if (m->body.contains("error")) st["error"] = m->body.at("error");
              statuses.push_back(std::move(st));
              r["statuses"] = std::move(statuses);
              slot = std::move(r);
            }
          }
          if (o_.ack && m->seq) {
            control::Message ack{"ack", control::new_id(), std::nullopt, iso8601(std::chrono::system_clock::now()),
                                 json::object{{"seq", *m->seq}}};
            send(control::encode(ack));
          }
        }
      }
    } catch (const boost::system::system_error& e) {
      if (!name.empty()) {
        json::object how;
        if (e.code() == websocket::error::closed) {
          how["code"] = static_cast<int>(ws.reason().code);
          how["reason"] = std::string(ws.reason().reason.c_str());
        } else {
          how["error"] = e.code().message();
        }
        instances_[name].last_close = std::move(how);
      }
    } catch (const std::exception&) {
    }
    open = false;
    if (!name.empty()) {
      instances_[name].connected = false;
      instances_[name].send = nullptr;
    }
    // Let a writer in flight finish before the stream goes away.
    asio::steady_timer t(ex);
    while (writing) {
      t.expires_after(std::chrono::milliseconds(10));
      co_await t.async_wait(asio::use_awaitable);
    }
  }

  asio::awaitable<void> agent_session(tcp::socket sock) {
    try {
      if (ssl_) {
        beast::ssl_stream<beast::tcp_stream> stream(std::move(sock), *ssl_);
        beast::get_lowest_layer(stream).expires_after(std::chrono::seconds(10));
        co_await stream.async_handshake(asio::ssl::stream_base::server, asio::use_awaitable);
        beast::get_lowest_layer(stream).expires_never();
        co_await upgrade_and_serve(stream, SSL_get_version(stream.native_handle()));
      } else {
        beast::tcp_stream stream(std::move(sock));
        co_await upgrade_and_serve(stream, "none");
      }
    } catch (const std::exception& e) {
      std::cerr << "devcp: agent connection: " << e.what() << "\n";
    }
  }

  json::object instances_json() const {
    json::object all;
    for (const auto& [name, i] : instances_) {
      json::object o;
      o["connected"] = i.connected;
      o["connects"] = i.connects;
      o["last_close"] = i.last_close;
      o["hello"] = i.hello;
      o["heartbeat"] = i.heartbeat;
      o["heartbeats"] = i.heartbeats;
      o["tls"] = i.tls;
      o["events"] = i.events;
      json::array recent;
      for (const auto& e : i.recent_events) recent.push_back(e);
      o["recent_events"] = std::move(recent);
      o["last_seq"] = i.last_seq;
      o["duplicates"] = i.duplicates;
      o["results"] = i.results;
      all[name] = std::move(o);
    }
    return all;
  }

  asio::awaitable<void> api_session(tcp::socket sock) {
    beast::tcp_stream stream(std::move(sock));
    beast::flat_buffer buffer;
    try {
      http::request<http::string_body> req;
      co_await http::async_read(stream, buffer, req, asio::use_awaitable);
      http::response<http::string_body> res{http::status::ok, 11};
      res.set(http::field::content_type, "application/json");
      std::string target(req.target());
      const std::string prefix = "/v1/instances/";
      if (req.method() == http::verb::get && target == "/v1/instances") {
        res.body() = json::serialize(instances_json());
      } else if (req.method() == http::verb::post && target.starts_with(prefix) && target.ends_with("/commands")) {
        std::string name = target.substr(prefix.size(), target.size() - prefix.size() - 9);
        auto it = instances_.find(name);
        boost::system::error_code ec;
        auto body = json::parse(req.body(), ec);
        if (it == instances_.end() || !it->second.send) {
          res.result(http::status::not_found);
          res.body() = "{\"error\":\"instance not connected\"}";
        } else if (ec || !body.is_object()) {
          res.result(http::status::bad_request);
          res.body() = "{\"error\":\"body must be a JSON object\"}";
        } else {
          auto& b = body.as_object();
          control::Message cmd{"command", control::new_id(), std::nullopt, iso8601(std::chrono::system_clock::now()), {}};
          if (auto* id = b.if_contains("id"); id && id->is_string()) cmd.id = std::string(id->as_string());
          for (const char* k : {"name", "args", "deadline"})
            if (auto* v = b.if_contains(k)) cmd.body[k] = *v;
          it->second.send(control::encode(cmd));
          res.body() = json::serialize(json::object{{"id", cmd.id}});
        }
      } else {
        res.result(http::status::not_found);
        res.body() = "{\"error\":\"no such path\"}";
      }
      res.prepare_payload();
      co_await http::async_write(stream, res, asio::use_awaitable);
    } catch (const std::exception&) {
    }
  }

  asio::io_context& ioc_;
  Options o_;
  std::string token_;
  std::optional<asio::ssl::context> ssl_;
  std::map<std::string, Instance> instances_;
};

tcp::endpoint endpoint_of(const std::string& s) {
  auto colon = s.rfind(':');
  return {asio::ip::make_address(s.substr(0, colon)), static_cast<unsigned short>(std::stoi(s.substr(colon + 1)))};
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::cerr << "devcp: " << a << " needs a value\n";
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--listen") o.listen = value();
    else if (a == "--api") o.api = value();
    else if (a == "--token-file") o.token_file = value();
    else if (a == "--tls-cert") o.tls_cert = value();
    else if (a == "--tls-key") o.tls_key = value();
    else if (a == "--ports-file") o.ports_file = value();
    else if (a == "--tls-max-version") o.tls_max = value();
    else if (a == "--no-ack") o.ack = false;
    else if (a == "--no-heartbeat-ack") o.heartbeat_ack = false;
    else if (a == "--freeze-after-hello") o.freeze = true;
    else if (a == "--quiet") o.quiet = true;
    else if (a == "--files") o.files = value();
    else {
      std::cerr << "usage: instanced-devcp --token-file FILE [--listen HOST:PORT] [--api HOST:PORT]\n"
                   "                      [--tls-cert PEM --tls-key PEM [--tls-max-version 1.1|1.2]] [--ports-file FILE]\n"
                   "                      [--no-ack] [--no-heartbeat-ack] [--freeze-after-hello] [--quiet] [--files DIR]\n";
      return 2;
    }
  }
  if (o.token_file.empty()) {
    std::cerr << "devcp: --token-file is required\n";
    return 2;
  }
  asio::io_context ioc;
  Server server(ioc, o);
  tcp::acceptor agents(ioc, endpoint_of(o.listen));
  tcp::acceptor api(ioc, endpoint_of(o.api));
  auto ap = agents.local_endpoint().port(), pp = api.local_endpoint().port();
  std::cerr << fmt::format("devcp: agents on {}://{}:{}/v1/agent, API on http://{}:{}/v1/instances\n",
                           o.tls_cert.empty() ? "ws" : "wss", agents.local_endpoint().address().to_string(), ap,
                           api.local_endpoint().address().to_string(), pp);
  if (!o.ports_file.empty()) {
    // Whole or not at all (a temporary renamed): whoever waits for it never reads half of it.
    const std::string part = o.ports_file + ".part";
    std::ofstream(part) << ap << " " << pp << "\n";
    std::filesystem::rename(part, o.ports_file);
  }
  asio::co_spawn(ioc, server.agents(std::move(agents)), asio::detached);
  asio::co_spawn(ioc, server.api(std::move(api)), asio::detached);
  asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) { ioc.stop(); });
  ioc.run();
}
