#include "agent/status/server.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/basic_stream.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>
#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <grp.h>
#include <map>
#include <sstream>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/status/textfile.hpp"
#include "common/fs.hpp"
#include "common/coro.hpp"

#ifndef SO_PEERGROUPS
#define SO_PEERGROUPS 59  // Linux 4.13; the portable build's 3.10 kernel headers lack it
#endif

namespace instanced::status {

namespace asio = boost::asio;
namespace beast = boost::beast;
using local = asio::local::stream_protocol;
using namespace asio::experimental::awaitable_operators;
using Stream = beast::basic_stream<local, asio::any_io_executor, beast::unlimited_rate_policy>;

struct StatusServer::Session {
  explicit Session(local::socket s) : stream(std::move(s)) {}
  Stream stream;
  Peer peer;
  bool waiting = true;  // for a request: idle, its slot may be given to a newcomer
  std::chrono::steady_clock::time_point idle_since = std::chrono::steady_clock::now();
  bool evicted = false;
};

namespace {

// How long a connection must have waited for a request before its slot may be given to a
// new client when all are taken (instancectl sends its request right after connecting).
constexpr auto kMinIdle = std::chrono::seconds(1);

Peer peer_of(int fd) {
  Peer p;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0) {
    p.pid = cred.pid;
    p.uid = cred.uid;
    p.gid = cred.gid;
  }
  // The peer process's supplementary groups, as they were at connect(); no NSS lookup.
  std::vector<gid_t> groups(64);
  for (int attempt = 0; attempt < 4; ++attempt) {
    socklen_t glen = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    if (getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &glen) == 0) {
      groups.resize(glen / sizeof(gid_t));
      p.groups = std::move(groups);
      break;
    }
    if (errno != ERANGE) break;
    groups.resize(glen / sizeof(gid_t) + 1);
  }
  return p;
}

// True when something answers on `path`: another agent owns it.
bool socket_in_use(const std::string& path) {
  Fd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, path.c_str(), sizeof addr.sun_path - 1);
  return ::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
}

}  // namespace

StatusServer::StatusServer(asio::any_io_executor ex, Api& api, const StatusConfig& config, Router& router)
    : ex_(ex),
      api_(api),
      config_(config),
      router_(router),
      log_(api.logging.get("status")),
      acceptor_(ex),
      slot_freed_(ex),
      textfile_poke_(ex) {}

StatusServer::~StatusServer() {
  if (bound_path_) ::unlink(config_.socket.c_str());
}

void StatusServer::resolve_group() {
  group buf{};
  group* found = nullptr;
  std::vector<char> scratch(16384);
  if (getgrnam_r(config_.group.c_str(), &buf, scratch.data(), scratch.size(), &found) == 0 && found) {
    operators_gid_ = found->gr_gid;
  } else {
    operators_gid_ = 0;
    log_->warn("operators' group '{}' does not exist; only root is served on {}", config_.group,
               config_.socket);
  }
}

Result<void> StatusServer::open(std::optional<int> activated_fd) {
  resolve_group();
  boost::system::error_code ec;
  if (activated_fd) {
    acceptor_.assign(local(), *activated_fd, ec);
    if (ec) return Error{fmt::format("status socket: cannot adopt activated fd {}: {}", *activated_fd, ec.message())};
    activated_ = true;
    log_->info("serving on the socket passed by systemd (fd {})", *activated_fd);
    publish();
    return {};
  }
  const std::string& path = config_.socket;
  if (path.size() >= sizeof(sockaddr_un{}.sun_path))
    return Error{fmt::format("status.socket: path '{}' is longer than {} bytes", path, sizeof(sockaddr_un{}.sun_path) - 1)};
  auto dir = std::filesystem::path(path).parent_path();
  if (auto r = api_.fs.create_directories(dir, 0755); !r) return Error{"status.socket: " + r.error().message};
  struct stat st{};
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Error{fmt::format("status.socket: '{}' exists and is not a socket", path)};
    if (socket_in_use(path)) return Error{fmt::format("status.socket: another process is serving '{}'", path)};
    ::unlink(path.c_str());  // stale, from an agent that did not exit cleanly
  }
  acceptor_.open(local(), ec);
  if (!ec) acceptor_.bind(local::endpoint(path), ec);
  if (ec) return Error{fmt::format("status.socket: cannot bind '{}': {}", path, ec.message())};
  bound_path_ = true;
  // Owner root (us), group operators, mode from config. Set before listen() so no client
  // can connect while the mode is still the umask's.
  if (::chown(path.c_str(), static_cast<uid_t>(-1), operators_gid_) != 0)
    log_->warn("cannot set group of {}: {}", path, std::strerror(errno));
  if (::chmod(path.c_str(), config_.mode.value) != 0)
    return Error{fmt::format("status.socket: cannot chmod '{}': {}", path, std::strerror(errno))};
  acceptor_.listen(1024, ec);
  if (ec) return Error{fmt::format("status.socket: cannot listen on '{}': {}", path, ec.message())};
  log_->info("serving on {} (mode {:04o}, group {})", path, config_.mode.value, config_.group);
  publish();
  return {};
}

void StatusServer::publish() {
  boost::json::object d;
  d["socket"] = activated_ ? std::string("(socket activation)") : config_.socket;
  d["group"] = config_.group;
  d["max_connections"] = config_.max_connections;
  api_.state.publish("status", Health::ok, "serving", std::move(d));
}

void StatusServer::count_connections() {
  api_.state.metrics().set_gauge("instanced_status_connections", "Open connections on the status socket.", {},
                                 static_cast<double>(sessions_.size()));
}

void StatusServer::reconfigure(const StatusConfig& config) {
  bool moved = config.socket != config_.socket && !activated_;
  std::string old_socket = config_.socket;
  config_ = config;
  if (moved) {
    log_->warn("status.socket changed to {}; the agent keeps serving on {} until restarted", config_.socket,
               old_socket);
    config_.socket = old_socket;
  }
  textfile_poke_.pulse();
  resolve_group();
  if (bound_path_) {
    if (::chown(config_.socket.c_str(), static_cast<uid_t>(-1), operators_gid_) != 0 ||
        ::chmod(config_.socket.c_str(), config_.mode.value) != 0)
      log_->warn("cannot apply group/mode to {}: {}", config_.socket, std::strerror(errno));
  }
  publish();
}

asio::awaitable<void> StatusServer::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  try {
    // The metrics' textfile beside the socket (textfile.hpp): the two end together.
    auto accepting = accept_loop();
    auto textfile = write_metrics_textfile(api_, router_, config_, textfile_poke_, log_);
    auto both = std::move(accepting) && std::move(textfile);
    co_await std::move(both);
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) log_->error("accept failed: {}", e.what());
  }
  // Shutdown: stop accepting and end every open connection.
  boost::system::error_code ignored;
  acceptor_.close(ignored);
  for (auto* s : sessions_) s->stream.socket().close(ignored);
  co_return;
}

asio::awaitable<void> StatusServer::accept_loop() {
  for (;;) {
    co_await until_admissible();
    local::socket sock = co_await acceptor_.async_accept(asio::use_awaitable);
    auto session = std::make_shared<Session>(std::move(sock));
    session->peer = peer_of(session->stream.socket().native_handle());
    if (!admit(*session)) continue;  // answered 503 and closed
    sessions_.insert(session.get());
    count_connections();
    asio::co_spawn(ex_, serve(session), asio::detached);
  }
}

// While every slot is taken by a connection that is not idle, clients wait in the
// kernel's listen backlog: until a slot frees (within request_timeout) or a connection has
// been idle for kMinIdle (looked at again every quarter of it, only while all are taken).
asio::awaitable<void> StatusServer::until_admissible() {
  while (sessions_.size() >= static_cast<std::size_t>(config_.max_connections) && !idle_to_evict()) {
    slot_freed_.expires_after(kMinIdle / 4);
    boost::system::error_code ec;
    co_await slot_freed_.async_wait(asio::redirect_error(asio::use_awaitable, ec));
    auto cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) throw boost::system::system_error(asio::error::operation_aborted);
  }
}

// The idle connection whose slot a newcomer gets: of the user holding the most
// connections, the one idle longest. Idle: waiting for a request for kMinIdle at least,
// with nothing sent to it that is not read yet (a request on its way is never cut).
StatusServer::Session* StatusServer::idle_to_evict() const {
  const auto now = std::chrono::steady_clock::now();
  auto idle = [&](Session& s) {
    if (!s.waiting || s.evicted || now - s.idle_since < kMinIdle) return false;
    int unread = 0;
    return ::ioctl(s.stream.socket().native_handle(), FIONREAD, &unread) == 0 && unread == 0;
  };
  std::map<uid_t, std::size_t> per_user;
  for (const auto* s : sessions_) ++per_user[s->peer.uid];
  Session* best = nullptr;
  for (auto* s : sessions_) {
    if (!idle(*s)) continue;
    if (!best || per_user[s->peer.uid] > per_user[best->peer.uid] ||
        (per_user[s->peer.uid] == per_user[best->peer.uid] && s->idle_since < best->idle_since))
      best = s;
  }
  return best;
}

// Whether the new connection is served; if not, it has been answered 503 and closed.
bool StatusServer::admit(Session& session) {
  std::size_t same_process = 0;
  for (const auto* s : sessions_) same_process += s->peer.pid == session.peer.pid;
  if (same_process >= static_cast<std::size_t>(config_.max_connections_per_process)) {
    refuse(session, "per_process",
           fmt::format("too many connections from process {} (status.max_connections_per_process is {})",
                       session.peer.pid, config_.max_connections_per_process));
    return false;
  }
  if (sessions_.size() < static_cast<std::size_t>(config_.max_connections)) return true;
  if (Session* idle = idle_to_evict()) {
    idle->evicted = true;
    boost::system::error_code ignored;
    idle->stream.socket().cancel(ignored);  // its read ends; serve() closes it and frees the slot
    api_.state.metrics().add_counter("instanced_status_evicted_total",
                                     "Idle connections closed to give their slot to a new client.", {});
    return true;  // served at once; the count drops back when the idle one has ended
  }
  refuse(session, "busy", fmt::format("all {} connection slots are busy with requests; try again", config_.max_connections));
  return false;
}

// A 503 written without waiting (a few hundred bytes fit any socket buffer), then closed.
void StatusServer::refuse(Session& session, const std::string& reason, const std::string& why) {
  auto res = error_response(beast::http::status::service_unavailable, why);
  res.keep_alive(false);
  res.prepare_payload();
  std::ostringstream text;
  text << res;
  const std::string out = text.str();
  int fd = session.stream.socket().native_handle();
  (void)::send(fd, out.data(), out.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
  boost::system::error_code ignored;
  session.stream.socket().close(ignored);
  api_.state.metrics().add_counter("instanced_status_refused_total",
                                   "Connections refused on the status socket, by reason.", {{"reason", reason}});
}

asio::awaitable<void> StatusServer::serve(std::shared_ptr<Session> session) {
  auto& stream = session->stream;
  auto& metrics = api_.state.metrics();
  const auto timeout = config_.request_timeout;
  auto count = [&](unsigned code) {
    metrics.add_counter("instanced_status_requests_total", "Requests answered on the status socket by HTTP status code.",
                        {{"code", std::to_string(code)}});
  };
  // Call sites pass named objects, never temporaries: GCC 12 mishandles temporaries with
  // destructors inside a co_await expression (see docs/architecture.md).
  auto send = [&](Response res, bool keep_alive) -> asio::awaitable<bool> {
    res.keep_alive(keep_alive);
    count(res.result_int());
    stream.expires_after(timeout);
    boost::system::error_code ec;
    co_await beast::http::async_write(stream, res, asio::redirect_error(asio::use_awaitable, ec));
    co_return !ec;
  };

  beast::flat_buffer buffer(static_cast<std::size_t>(config_.max_header_bytes.bytes + config_.max_body_bytes.bytes) + 4096);
  const bool allowed = authorized(session->peer, operators_gid_);
  for (;;) {
    beast::http::request_parser<beast::http::string_body> parser;
    parser.header_limit(static_cast<std::uint32_t>(config_.max_header_bytes.bytes));
    parser.body_limit(config_.max_body_bytes.bytes);
    stream.expires_after(timeout);
    session->waiting = true;
    session->idle_since = std::chrono::steady_clock::now();
    boost::system::error_code ec;
    co_await beast::http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    session->waiting = false;
    if (session->evicted) break;  // its slot went to a newcomer
    if (ec) {
      // What to answer a request that could not be read, if anything.
      std::optional<Response> reply;
      if (ec == beast::http::error::header_limit) {
        reply = error_response(beast::http::status::request_header_fields_too_large,
                               fmt::format("request header larger than {} bytes", config_.max_header_bytes.bytes));
      } else if (ec == beast::http::error::body_limit) {
        reply = error_response(beast::http::status::payload_too_large,
                               fmt::format("request body larger than {} bytes", config_.max_body_bytes.bytes));
      } else if (ec == beast::error::timeout) {
        if (parser.got_some() || buffer.size() > 0)
          metrics.add_counter("instanced_status_timeouts_total",
                              "Connections cut off for not completing a request in time.", {});
      } else if (ec != beast::http::error::end_of_stream && ec != beast::http::error::partial_message &&
                 ec != asio::error::eof && ec != asio::error::connection_reset &&
                 ec != asio::error::operation_aborted && ec != asio::error::bad_descriptor) {
        reply = error_response(beast::http::status::bad_request, "malformed request: " + ec.message());
      }
      if (reply) co_await send(std::move(*reply), false);
      break;
    }
    auto& req = parser.get();
    if (!allowed) {
      log_->warn("refused {} {} from pid {} uid {}: not root and not in group '{}'",
                 std::string(req.method_string()), std::string(req.target()), session->peer.pid, session->peer.uid,
                 config_.group);
      Response refusal = error_response(
          beast::http::status::forbidden,
          fmt::format("permission denied: only root and members of group '{}' may use this socket", config_.group));
      co_await send(std::move(refusal), false);
      break;
    }
    // Who asks, for handlers that act on the caller's behalf (a job runs as its
    // submitter unless root submitted it); never what the client claims.
    req.erase(kPeerUidHeader);
    req.set(kPeerUidHeader, std::to_string(session->peer.uid));
    Response res = co_await router_.handle_async(req);
    bool keep = req.keep_alive();
    if (!co_await send(std::move(res), keep) || !keep) break;
  }
  boost::system::error_code ignored;
  stream.socket().shutdown(local::socket::shutdown_both, ignored);
  stream.socket().close(ignored);
  sessions_.erase(session.get());
  count_connections();
  slot_freed_.cancel();
}

}  // namespace instanced::status
