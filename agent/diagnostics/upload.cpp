#include "agent/diagnostics/upload.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <exception>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>
#include <vector>

#include "common/blob.hpp"
#include "common/build_info.hpp"
#include "common/coro.hpp"
#include "common/fs.hpp"
#include "common/http_get.hpp"
#include "common/proxy.hpp"
#include "common/tls.hpp"

namespace instanced::diagnostics {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

constexpr std::size_t kChunk = 256 << 10;

PutOutcome answered(const http::response<http::string_body>& res) {
  PutOutcome o;
  o.status = res.result_int();
  o.ok = o.status == 201 || o.status == 200;
  if (o.ok) return o;
  o.retry = o.status == 408 || o.status == 429 || o.status >= 500;
  o.error = blob::answered(o.status, res.reason(), res["x-ms-error-code"]);
  return o;
}

// The request's header, then the file in chunks; the file's bytes so far are told to `sent`.
// Error: the file could not be read. A failed write is thrown.
template <class Stream>
asio::awaitable<Result<void>> send(Stream& stream, const Url& url, const std::filesystem::path& file, std::uint64_t size,
                                   const std::function<void(std::uint64_t)>& sent) {
  Fd in(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) co_return Error{fmt::format("{}: cannot open: {}", file.string(), std::strerror(errno))};
  http::request<http::buffer_body> req{http::verb::put, url.target, 11};
  req.set(http::field::host, url.authority());
  req.set(http::field::user_agent, std::string("instanced/") + build_version());
  req.set(http::field::content_type, "application/gzip");
  req.set("x-ms-blob-type", "BlockBlob");
  req.set("x-ms-version", blob::kApiVersion);
  req.content_length(size);
  req.body().data = nullptr;
  req.body().more = true;
  http::request_serializer<http::buffer_body> sr{req};
  co_await http::async_write_header(stream, sr, asio::use_awaitable);
  std::vector<char> buf(kChunk);
  std::uint64_t done = 0;
  while (done < size) {
    ssize_t n = ::read(in.get(), buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), size - done)));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) co_return Error{fmt::format("{}: read: {}", file.string(), n == 0 ? "shorter than it was" : std::strerror(errno))};
    req.body().data = buf.data();
    req.body().size = static_cast<std::size_t>(n);
    req.body().more = done + static_cast<std::uint64_t>(n) < size;
    boost::system::error_code ec;
    co_await http::async_write(stream, sr, asio::redirect_error(asio::use_awaitable, ec));
    if (ec && ec != http::error::need_buffer) throw boost::system::system_error(ec);
    done += static_cast<std::uint64_t>(n);
    sent(done);
  }
  if (size == 0) {
    req.body().more = false;
    co_await http::async_write(stream, sr, asio::use_awaitable);
  }
  co_return Result<void>{};
}

// The request, then the answer. The service may answer (403: a wrong signature) and close
// before the whole body is sent: after a failed write the answer is still read, and it is
// what is reported; only without one is the write's error thrown.
template <class Stream>
asio::awaitable<PutOutcome> exchange(Stream& stream, const Url& url, const std::filesystem::path& file,
                                     std::uint64_t size, const std::function<void(std::uint64_t)>& sent) {
  std::exception_ptr write_failed;
  try {
    auto sending = send(stream, url, file, size, sent);
    auto sent_all = co_await std::move(sending);
    if (!sent_all) co_return PutOutcome{false, false, 0, sent_all.error().message};
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
    write_failed = std::current_exception();
  }
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 << 10);
  boost::system::error_code ec;
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec && write_failed) std::rethrow_exception(write_failed);
  if (ec) throw boost::system::system_error(ec);
  co_return answered(parser.get());
}

asio::awaitable<PutOutcome> over_tls(beast::tcp_stream tcp, const Url& url, const std::filesystem::path& file,
                                     std::uint64_t size, const std::function<void(std::uint64_t)>& sent) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  (void)tls::verify_peers(ctx);  // the system's store: nothing to fail
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), url.host.c_str());
  stream.set_verify_callback(asio::ssl::host_name_verification(url.host));
  co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  auto put = exchange(stream, url, file, size, sent);
  co_return co_await std::move(put);
}

}  // namespace

asio::awaitable<PutOutcome> put_blob(Url url, std::filesystem::path file, std::uint64_t size,
                                     Duration timeout, std::function<void(std::uint64_t)> sent, ProxyConfig proxy) {
  auto through = proxy_for(url.host, url.tls, proxy);
  if (!through) co_return PutOutcome{false, false, 0, through.error().message};
  beast::tcp_stream tcp(co_await asio::this_coro::executor);
  tcp.expires_after(timeout);
  try {
    auto dialling = dial(tcp, url.host, url.port, *through);
    auto dialled = co_await std::move(dialling);
    if (!dialled) co_return PutOutcome{false, true, 0, fmt::format("PUT {}: {}", url.shown(), dialled.error().message)};
    if (url.tls) {
      auto secured = over_tls(std::move(tcp), url, file, size, sent);
      co_return co_await std::move(secured);
    }
    auto plain = exchange(tcp, url, file, size, sent);
    co_return co_await std::move(plain);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
    co_return PutOutcome{false, true, 0, fmt::format("PUT {}: {}", url.shown(), describe_io_error(e))};
  }
}

}  // namespace instanced::diagnostics
