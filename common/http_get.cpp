#include "common/http_get.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/coro.hpp"

namespace instanced {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

asio::awaitable<void> connect_to(beast::tcp_stream& stream, const Url& url) {
  auto ex = co_await asio::this_coro::executor;
  tcp::resolver resolver(ex);
  auto endpoints = co_await resolver.async_resolve(url.host, url.port, asio::use_awaitable);
  co_await stream.async_connect(endpoints, asio::use_awaitable);
}

std::string describe_io_error(const boost::system::system_error& e) {
  if (e.code() == beast::error::timeout) return "no answer within the timeout";
  return e.code().message();
}

asio::awaitable<Result<HttpAnswer>> http_get(const Url& url, const HttpHeaders& headers, Duration timeout,
                                             std::size_t max_body) {
  auto started = std::chrono::steady_clock::now();
  beast::tcp_stream stream(co_await asio::this_coro::executor);
  try {
    stream.expires_after(timeout);
    co_await connect_to(stream, url);
    http::request<http::empty_body> req{http::verb::get, url.target, 11};
    req.set(http::field::host, url.authority());
    req.set(http::field::user_agent, std::string("instanced/") + build_version());
    for (const auto& [name, value] : headers) req.set(name, value);
    co_await http::async_write(stream, req, asio::use_awaitable);
    beast::flat_buffer buffer;
    http::response_parser<http::string_body> parser;
    parser.body_limit(max_body);
    co_await http::async_read(stream, buffer, parser, asio::use_awaitable);
    HttpAnswer a;
    a.status = parser.get().result_int();
    a.body = std::move(parser.get().body());
    a.elapsed = std::chrono::duration_cast<Duration>(std::chrono::steady_clock::now() - started);
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    co_return a;
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
    co_return Error{fmt::format("GET {}: {}", url.target, describe_io_error(e))};
  }
}

}  // namespace instanced
