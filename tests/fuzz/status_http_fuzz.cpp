// libFuzzer target: the status socket's request handling (Beast's parser with the
// server's limits, then the router and the agent views) on arbitrary bytes.
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/parser.hpp>
#include <cstdint>

#include "agent/status/router.hpp"
#include "agent/status/views.hpp"

using namespace instanced;
namespace http = boost::beast::http;

namespace {
struct World {
  RealClock clock;
  StateRegistry state{clock};
  status::AgentInfo info;
  status::Router router;
  World() {
    info.version = "fuzz";
    info.phase = "running";
    status::add_agent_routes(router, info, state, clock);
    state.publish("status", Health::ok, "serving");
  }
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static World world;
  http::request_parser<http::string_body> parser;
  parser.header_limit(8 * 1024);
  parser.body_limit(64 * 1024);
  parser.eager(true);
  boost::system::error_code ec;
  std::size_t used = parser.put(boost::asio::buffer(data, size), ec);
  (void)used;
  if (!ec && parser.is_done()) {
    auto res = world.router.handle(parser.get());
    res.prepare_payload();
  }
  return 0;
}
