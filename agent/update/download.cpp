#include "agent/update/download.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <memory>
#include <openssl/evp.h>
#include <unistd.h>
#include <vector>

#include "common/build_info.hpp"
#include "common/coro.hpp"
#include "common/fs.hpp"
#include "common/http_get.hpp"
#include "common/proxy.hpp"
#include "common/text.hpp"
#include "common/tls.hpp"

namespace instanced::update {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kChunk = 64 << 10;

struct Sha256 {
  Sha256() : ctx(EVP_MD_CTX_new()) { EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr); }
  ~Sha256() { EVP_MD_CTX_free(ctx); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void add(const char* p, std::size_t n) { EVP_DigestUpdate(ctx, p, n); }
  std::string hex() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int n = 0;
    EVP_DigestFinal_ex(ctx, md, &n);
    std::string out;
    for (unsigned i = 0; i < n; ++i) out += fmt::format("{:02x}", md[i]);
    return out;
  }
  EVP_MD_CTX* ctx;
};

// The request, the header (checked, then `admit`), the body into `out`.
template <class Stream>
asio::awaitable<std::variant<Fetched, FetchError>> exchange(Stream& stream, const Fetch& f, int out) {
  http::request<http::empty_body> req{http::verb::get, f.url.target, 11};
  req.set(http::field::host, f.url.authority());
  req.set(http::field::user_agent, std::string("instanced/") + build_version());
  co_await http::async_write(stream, req, asio::use_awaitable);
  beast::flat_buffer buffer;
  http::response_parser<http::buffer_body> parser;
  co_await http::async_read_header(stream, buffer, parser, asio::use_awaitable);
  parser.body_limit(f.max_bytes);  // after the header: one announcing more is answered below
  const auto& head = parser.get();
  if (head.result() != http::status::ok)
    co_return FetchError{false, fmt::format("the server answered {} {}", head.result_int(),
                                            escape_for_log(std::string(head.reason())))};
  std::optional<std::uint64_t> length;
  if (parser.content_length()) length = *parser.content_length();
  if (length && *length > f.max_bytes)
    co_return FetchError{true, fmt::format("the package is {}, over update.max_bytes ({})", format_size(ByteSize{*length}),
                                           format_size(ByteSize{f.max_bytes}))};
  if (auto ok = f.admit(length); !ok) co_return FetchError{true, ok.error().message};
  Sha256 sha;
  Fetched got;
  std::vector<char> chunk(kChunk);
  while (!parser.is_done()) {
    parser.get().body().data = chunk.data();
    parser.get().body().size = chunk.size();
    boost::system::error_code ec;
    co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
    if (ec == http::error::body_limit)
      co_return FetchError{true, fmt::format("the package is over update.max_bytes ({})", format_size(ByteSize{f.max_bytes}))};
    if (ec && ec != http::error::need_buffer) throw boost::system::system_error(ec);
    const std::size_t n = chunk.size() - parser.get().body().size;
    sha.add(chunk.data(), n);
    for (std::size_t done = 0; done < n;) {
      ssize_t w = ::write(out, chunk.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) co_return FetchError{false, fmt::format("{}: write: {}", f.file.string(), std::strerror(errno))};
      done += static_cast<std::size_t>(w);
    }
    got.bytes += n;
  }
  got.sha256 = sha.hex();
  co_return got;
}

asio::awaitable<std::variant<Fetched, FetchError>> over_tls(beast::tcp_stream tcp, const Fetch& f, int out) {
  asio::ssl::context ctx(asio::ssl::context::tls_client);
  if (auto trusted = tls::verify_peers(ctx, f.ca_file, "update.ca_file"); !trusted)
    co_return FetchError{false, trusted.error().message};
  beast::ssl_stream<beast::tcp_stream> stream(std::move(tcp), ctx);
  SSL_set_tlsext_host_name(stream.native_handle(), f.url.host.c_str());
  stream.set_verify_callback(asio::ssl::host_name_verification(f.url.host));
  co_await stream.async_handshake(asio::ssl::stream_base::client, asio::use_awaitable);
  auto got = exchange(stream, f, out);
  co_return co_await std::move(got);
}

asio::awaitable<std::variant<Fetched, FetchError>> fetch_into(const Fetch& f, int out) {
  auto through = proxy_for(f.url.host, true, f.proxy);
  if (!through) co_return FetchError{false, through.error().message};
  beast::tcp_stream tcp(co_await asio::this_coro::executor);
  tcp.expires_after(f.timeout);
  try {
    auto dialling = dial(tcp, f.url.host, f.url.port, *through);
    auto dialled = co_await std::move(dialling);
    if (!dialled) co_return FetchError{false, dialled.error().message};
    auto got = over_tls(std::move(tcp), f, out);
    co_return co_await std::move(got);
  } catch (const boost::system::system_error& e) {
    if (is_cancelled(e)) throw;
    co_return FetchError{false, describe_io_error(e)};
  }
}

}  // namespace

asio::awaitable<std::variant<Fetched, FetchError>> fetch(Fetch f) {
  std::variant<Fetched, FetchError> result = FetchError{false, "https:// is required"};
  if (f.url.tls) {
    Fd out(::open(f.file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
    if (!out) co_return FetchError{false, fmt::format("{}: cannot create: {}", f.file.string(), std::strerror(errno))};
    try {
      auto fetching = fetch_into(f, out.get());
      result = co_await std::move(fetching);
    } catch (...) {
      std::error_code ec;
      fs::remove(f.file, ec);
      throw;
    }
  }
  if (auto* e = std::get_if<FetchError>(&result)) {
    std::error_code ec;
    fs::remove(f.file, ec);
    e->message = fmt::format("GET {}: {}", f.url.shown(), e->message);
  }
  co_return result;
}

}  // namespace instanced::update
