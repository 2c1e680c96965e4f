#include "agent/mounts/blob_check.hpp"

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/ssl.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/ssl.hpp>
#include <ctime>
#include <fmt/format.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "common/blob.hpp"
#include "common/proxy.hpp"
#include "common/text.hpp"
#include "common/tls.hpp"
#include "common/url.hpp"

namespace instanced::mounts {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;

namespace {

std::string http_date() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  ::gmtime_r(&t, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "%a, %d %b %Y %H:%M:%S GMT", &tm);
  return buf;
}

// The storage service's error code (x-ms-error-code), else the status, as a Reason.
Reason classify_status(unsigned status, const std::string& code) {
  if (status == 403 || status == 401) return Reason::auth_failed;
  if (status == 404) return Reason::not_found;
  if (!code.empty()) return classify_output(code);
  return Reason::other;
}

template <class Stream>
asio::awaitable<AccessCheck> get(Stream& stream, http::request<http::empty_body>& req) {
  boost::system::error_code ec;
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return AccessCheck{Reason::unreachable, fmt::format("sending the request: {}", ec.message())};
  beast::flat_buffer buffer;
  http::response_parser<http::string_body> parser;
  parser.body_limit(64 * 1024);
  co_await http::async_read(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return AccessCheck{Reason::unreachable, fmt::format("reading the answer: {}", ec.message())};
  const auto& res = parser.get();
  unsigned status = res.result_int();
  if (status == 200) co_return AccessCheck{};
  std::string code(res["x-ms-error-code"]);
  Reason r = classify_status(status, code);
  co_return AccessCheck{r, blob::answered(status, res.reason(), code)};
}

}  // namespace

Result<BlobUrl> container_url(const MountConfig& m) {
  auto parsed = parse_url(blob_endpoint(m));
  if (!parsed) return Error{parsed.error().message};
  if (parsed->scheme.starts_with("ws")) return Error{fmt::format("'{}' is not an http(s) URL", blob_endpoint(m))};
  BlobUrl u;
  u.tls = parsed->tls;
  u.host = parsed->host;
  u.port = parsed->port;
  std::string path = parsed->target;
  while (!path.empty() && path.back() == '/') path.pop_back();
  u.path = path + "/" + m.container;
  // Path-style (the emulator): the account appears in the path and again in the resource.
  u.canonical_resource = "/" + m.account + u.path;
  return u;
}

Result<std::string> shared_key_authorization(const std::string& account, const std::string& key,
                                             const std::string& canonical_resource, const std::string& date,
                                             const std::string& version) {
  auto raw = base64_decoded(key);
  if (!raw) return Error{"the account key is not base64"};
  // VERB, 11 standard headers (all empty for this GET), canonical x-ms- headers, resource.
  std::string to_sign = "GET\n\n\n\n\n\n\n\n\n\n\n\n";
  to_sign += "x-ms-date:" + date + "\nx-ms-version:" + version + "\n";
  to_sign += canonical_resource + "\nrestype:container";
  unsigned char mac[EVP_MAX_MD_SIZE];
  unsigned int mac_len = 0;
  HMAC(EVP_sha256(), raw->data(), static_cast<int>(raw->size()), reinterpret_cast<const unsigned char*>(to_sign.data()),
       to_sign.size(), mac, &mac_len);
  const std::string sig = base64_encoded(std::string_view(reinterpret_cast<const char*>(mac), mac_len));
  return fmt::format("SharedKey {}:{}", account, sig);
}

asio::awaitable<AccessCheck> check_blob_access(asio::any_io_executor ex, const MountConfig& m, const Secrets& secrets,
                                                Duration timeout, const ProxyConfig& proxy) {
  if (m.managed_identity) co_return AccessCheck{};
  auto url = container_url(m);
  if (!url) co_return AccessCheck{Reason::other, url.error().message};
  http::request<http::empty_body> req{http::verb::get, url->path + "?restype=container", 11};
  req.set(http::field::host, url->host);
  req.set(http::field::user_agent, "instanced");
  const std::string date = http_date();
  req.set("x-ms-date", date);
  req.set("x-ms-version", blob::kApiVersion);
  if (!m.sas_file.empty()) {
    req.target(url->path + "?restype=container&" + secrets.sas);
  } else {
    auto auth = shared_key_authorization(m.account, secrets.key, url->canonical_resource, date, blob::kApiVersion);
    if (!auth) co_return AccessCheck{Reason::auth_failed, fmt::format("key_file {}: {}", m.key_file, auth.error().message)};
    req.set(http::field::authorization, *auth);
  }

  auto proxy_to = proxy_for(url->host, url->tls, proxy);
  if (!proxy_to) co_return AccessCheck{Reason::other, proxy_to.error().message};
  beast::tcp_stream tcp(ex);
  tcp.expires_after(timeout);
  const std::string host = url->host, port = url->port;
  auto dialling = dial(tcp, host, port, *proxy_to);
  auto dialled = co_await std::move(dialling);
  if (!dialled) co_return AccessCheck{Reason::unreachable, dialled.error().message};
  boost::system::error_code ec;
  if (!url->tls) co_return co_await get(tcp, req);

  asio::ssl::context ctx(asio::ssl::context::tls_client);
  (void)tls::verify_peers(ctx);  // the system's store: nothing to fail
  beast::ssl_stream<beast::tcp_stream> tls(std::move(tcp), ctx);
  SSL_set_tlsext_host_name(tls.native_handle(), host.c_str());
  tls.set_verify_callback(asio::ssl::host_name_verification(host));
  co_await tls.async_handshake(asio::ssl::stream_base::client, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return AccessCheck{Reason::unreachable, fmt::format("TLS with {}: {}", host, ec.message())};
  co_return co_await get(tls, req);
}

}  // namespace instanced::mounts
