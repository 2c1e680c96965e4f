// Request routing of the status socket, free of I/O: a parsed request in, a response out.
// The server (server.hpp) owns the connections; subsystems add their /v1/<name> routes here.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/verb.hpp>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string_view>
#include <string>
#include <sys/types.h>
#include <vector>

#include "common/run_log.hpp"

namespace instanced::status {

namespace http = boost::beast::http;
using Request = http::request<http::string_body>;
using Response = http::response<http::string_body>;

// The credentials of the process at the other end of the socket (SO_PEERCRED, SO_PEERGROUPS).
struct Peer {
  pid_t pid = -1;
  uid_t uid = static_cast<uid_t>(-1);
  gid_t gid = static_cast<gid_t>(-1);
  std::vector<gid_t> groups;
};

// Root and members of the operators' group are served; everyone else gets 403.
bool authorized(const Peer& peer, gid_t operators_gid);

Response json_response(http::status status, std::string body);
Response text_response(http::status status, std::string body, std::string content_type = "text/plain; charset=utf-8");
// {"error": message} with the given status.
Response error_response(http::status status, std::string_view message);

// Set by the server on every request: the uid of the process at the other end of the
// socket (SO_PEERCRED). A client's own header of that name is replaced.
inline constexpr const char* kPeerUidHeader = "X-Instanced-Peer-Uid";

// A byte offset in the query string (`from=N`): 0 when absent, nothing when it is not a number.
std::optional<std::uint64_t> offset_param(const Request& request, std::string_view key);
// A chunk of a capped output log (a script's run, a job) as the answer of a log route:
// the bytes, and headers X-Instanced-Next (ask for this next), X-Instanced-Skipped
// (bytes cut from the log before this chunk), X-Instanced-Running (1 while it goes on).
Response log_chunk_response(LogChunk chunk, bool running);

// The value of `key` in the request's query string, %XX and '+' decoded; nothing if absent.
std::optional<std::string> query_param(const Request& request, std::string_view key);

class Router {
 public:
  using Handler = std::function<Response(const Request&)>;
  // A route whose answer waits on the loop (a job's record made durable); the request
  // outlives the wait.
  using AsyncHandler = std::function<boost::asio::awaitable<Response>(const Request&)>;

  void add(http::verb method, std::string path, Handler handler);
  void add_async(http::verb method, std::string path, AsyncHandler handler);
  // 404 for an unknown path, 405 (with Allow) for a known path and another method.
  // The query string is not part of the path: "/metrics?x=1" routes to "/metrics".
  // handle() answers an asynchronous route with 500: the server uses handle_async().
  Response handle(const Request& request) const;
  boost::asio::awaitable<Response> handle_async(const Request& request) const;
  // The paths that take `method`, in order.
  std::vector<std::string> paths(http::verb method) const;

 private:
  struct Route {
    Handler handler;
    AsyncHandler async;
  };
  // The request's route, or the 404/405 answer.
  const Route* find(const Request& request, Response& refusal) const;

  std::map<std::string, std::map<http::verb, Route>> routes_;
};

}  // namespace instanced::status
