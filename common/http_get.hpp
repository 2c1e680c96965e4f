// One HTTP GET (http:// only: a local application, the cloud's metadata service), bounded
// by one timeout from the connect to the last byte, its body capped.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/system/system_error.hpp>
#include <string>
#include <utility>
#include <vector>

#include "common/result.hpp"
#include "common/units.hpp"
#include "common/url.hpp"

namespace instanced {

struct HttpAnswer {
  unsigned status = 0;
  std::string body;  // at most the cap asked for
  Duration elapsed{};
};

using HttpHeaders = std::vector<std::pair<std::string, std::string>>;

// GET `url` with `headers` beside Host and User-Agent. An error reads "GET TARGET: why"
// ("no answer within the timeout", "Connection refused", a body over the cap); the
// agent's stop is thrown.
boost::asio::awaitable<Result<HttpAnswer>> http_get(const Url& url, const HttpHeaders& headers, Duration timeout,
                                                    std::size_t max_body);

// The TCP connection to the URL's host and port (the stream's expiry bounds it).
boost::asio::awaitable<void> connect_to(boost::beast::tcp_stream& stream, const Url& url);
// An I/O error as a sentence: "no answer within the timeout" for the stream's expiry.
std::string describe_io_error(const boost::system::system_error& e);

}  // namespace instanced
