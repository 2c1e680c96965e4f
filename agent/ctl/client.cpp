#include "agent/ctl/client.hpp"

namespace instanced::ctl {

// An error answer of the agent ({"error": …}) as an exception.
void agent_refused(const Reply& reply) {
  std::string msg = reply.body;
  try {
    msg = str(parse_json(reply.body), "error");
  } catch (...) {
  }
  throw Failure(reply.status == 403 ? kNoPermission : kRefused, fmt::format("{} (HTTP {})", msg, reply.status));
}

// One request over the Unix socket; errors are thrown as a Failure: a message for people and the exit status.
Reply request(const std::string& socket, http::verb method, const std::string& target, const std::string& body) {
  asio::io_context ioc;
  beast::basic_stream<asio::local::stream_protocol> stream(ioc);
  stream.expires_after(std::chrono::seconds(10));
  boost::system::error_code ec;
  stream.socket().connect(asio::local::stream_protocol::endpoint(socket), ec);
  if (ec) {
    if (ec == asio::error::access_denied)
      throw Failure(kNoPermission, fmt::format("cannot connect to {}: permission denied (run as root or as a member of the operators' group)", socket));
    throw Failure(kUnreachable, fmt::format("cannot connect to {}: {} (is instanced running?)", socket, ec.message()));
  }
  http::request<http::string_body> req{method, target, 11};
  req.set(http::field::host, "instanced");
  req.set(http::field::user_agent, "instancectl/" INSTANCED_VERSION);
  req.keep_alive(false);
  if (!body.empty()) {
    req.set(http::field::content_type, "application/json");
    req.body() = body;
  }
  req.prepare_payload();
  http::write(stream.socket(), req, ec);
  if (ec) throw Failure(kUnreachable, fmt::format("sending to {}: {}", socket, ec.message()));
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(16 << 20);
  http::read(stream.socket(), buffer, parser, ec);
  if (ec) throw Failure(kUnreachable, fmt::format("reading from {}: {}", socket, ec.message()));
  Reply reply{parser.get().result_int(), parser.get().body(), {}};
  for (const auto& f : parser.get())
    if (f.name_string().starts_with("X-Instanced-")) reply.headers[std::string(f.name_string())] = std::string(f.value());
  return reply;
}

json::value parse_json(const std::string& body) {
  json::parse_options opt;
  opt.max_depth = 64;
  boost::system::error_code ec;
  auto v = json::parse(body, ec, {}, opt);
  if (ec) throw std::runtime_error("the agent's answer is not valid JSON: " + ec.message());
  return v;
}

std::string str(const json::value& v, std::string_view key) {
  if (!v.is_object()) return {};
  auto* p = v.as_object().if_contains(key);
  if (!p) return {};
  if (p->is_string()) return std::string(p->as_string());
  return json::serialize(*p);
}

std::string human_duration(double seconds) {
  auto s = static_cast<long long>(seconds);
  if (s < 60) return fmt::format("{}s", s);
  if (s < 3600) return fmt::format("{}m{}s", s / 60, s % 60);
  if (s < 86400) return fmt::format("{}h{}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}d{}h", s / 86400, (s % 86400) / 3600);
}

std::string pad(const std::string& s, std::size_t width, std::size_t visible) {
  return s + std::string(width > visible ? width - visible : 1, ' ');
}

// "a run of 3.2s", "-" for nothing.
std::string field_or_dash(const json::value& v, std::string_view key) {
  auto s = str(v, key);
  return s.empty() || s == "null" ? "-" : s;
}

std::string human(double bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) bytes /= 1024, ++u;
  return u == 0 ? fmt::format("{:.0f} B", bytes) : fmt::format("{:.1f} {}", bytes, units[u]);
}

double num(const json::value& v, std::string_view key) {
  auto* p = v.is_object() ? v.as_object().if_contains(key) : nullptr;
  return p && p->is_number() ? p->to_number<double>() : 0;
}

// Prints a capped log from the start (route?...&from=N); with --follow until it ends.
int follow_log(const Args& a, const std::string& route) {
  std::uint64_t from = 0;
  for (;;) {
    auto reply = request(a.socket, http::verb::get, fmt::format("{}&from={}", route, from));
    if (reply.status != 200) agent_refused(reply);
    if (auto sk = reply.headers["X-Instanced-Skipped"]; !sk.empty() && sk != "0")
      std::cout << fmt::format("\n[instancectl: {} bytes of output were not kept]\n", sk);
    std::cout << reply.body << std::flush;
    std::uint64_t next = std::stoull(reply.headers["X-Instanced-Next"].empty() ? "0" : reply.headers["X-Instanced-Next"]);
    bool running = reply.headers["X-Instanced-Running"] == "1";
    if (next == from && (!a.follow || !running)) return kHealthy;
    if (next == from) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    from = next;
  }
}

}  // namespace instanced::ctl
