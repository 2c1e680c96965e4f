// A keep-alive HTTP client of the status socket, for tests and benchmarks that send many
// requests (curl would start a process for each).
#pragma once

#include <boost/asio/io_context.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <filesystem>
#include <string>

namespace instanced::testing {

class UnixHttp {
 public:
  struct Reply {
    unsigned status = 0;
    std::string body;
  };

  explicit UnixHttp(std::filesystem::path socket) : socket_(std::move(socket)), stream_(ioc_) {}

  Reply request(boost::beast::http::verb method, const std::string& target, const std::string& body = {}) {
    // A kept-alive connection the server has closed meanwhile (its idle timeout): once
    // more on a new one.
    if (stream_.is_open()) {
      try {
        return exchange(method, target, body);
      } catch (const boost::system::system_error&) {
        boost::system::error_code ec;
        stream_.close(ec);
        buffer_.clear();
      }
    }
    return exchange(method, target, body);
  }
  Reply exchange(boost::beast::http::verb method, const std::string& target, const std::string& body) {
    namespace http = boost::beast::http;
    if (!stream_.is_open()) stream_.connect(boost::asio::local::stream_protocol::endpoint(socket_.string()));
    http::request<http::string_body> req{method, target, 11};
    req.set(http::field::host, "instanced");
    req.keep_alive(true);
    if (!body.empty()) req.set(http::field::content_type, "application/json");
    req.body() = body;
    req.prepare_payload();
    http::write(stream_, req);
    http::response_parser<http::string_body> parser;
    parser.body_limit(64 << 20);
    http::read(stream_, buffer_, parser);
    Reply r{parser.get().result_int(), parser.get().body()};
    if (!parser.get().keep_alive()) stream_.close();
    return r;
  }
  Reply get(const std::string& target) { return request(boost::beast::http::verb::get, target); }
  Reply post(const std::string& target, const std::string& body = {}) {
    return request(boost::beast::http::verb::post, target, body);
  }

 private:
  std::filesystem::path socket_;
  boost::asio::io_context ioc_;
  boost::asio::local::stream_protocol::socket stream_;
  boost::beast::flat_buffer buffer_;
};

}  // namespace instanced::testing
