#include "common/proxy.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http.hpp>
#include <cctype>
#include <cstdlib>
#include <fmt/format.h>

#include "common/build_info.hpp"
#include "common/text.hpp"
#include "common/url.hpp"

namespace instanced {
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = asio::ip::tcp;

namespace {

const char* env_either(const char* lower, const char* upper) {
  const char* v = std::getenv(lower);
  if (!v || !*v) v = std::getenv(upper);
  return v && *v ? v : nullptr;
}

std::vector<std::string> split_list(std::string_view list) {
  std::vector<std::string> out;
  while (!list.empty()) {
    auto comma = list.find(',');
    out.emplace_back(list.substr(0, comma));
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return out;
}

void set_credentials(Proxy& p, const std::string& user, const std::string& password) {
  p.authorization = Secret("Basic " + base64_encoded(user + ":" + password));
  p.userinfo = Secret(percent_encoded(user) + ":" + percent_encoded(password));
}

// A connection error as a sentence; the agent's stop is thrown.
std::string io_error(const boost::system::error_code& ec) {
  if (ec == asio::error::operation_aborted) throw boost::system::system_error(ec);
  if (ec == beast::error::timeout) return "no answer within the timeout";
  return ec.message();
}

}  // namespace

bool host_in(std::string_view host_name, const std::vector<std::string>& list) {
  auto lower = [](std::string_view s) {
    std::string out(s);
    for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
  };
  const std::string host = lower(host_name);  // names are not case-sensitive
  for (const std::string& entry : list) {
    std::string_view item = entry;
    while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
    while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
    if (item == "*") return true;
    if (!item.empty() && item.front() == '.') item.remove_prefix(1);
    if (item.empty()) continue;
    const std::string name = lower(item);
    if (host == name || (host.size() > name.size() && host.ends_with(name) && host[host.size() - name.size() - 1] == '.'))
      return true;
  }
  return false;
}

Result<Proxy> parse_proxy(std::string url, const std::string& credentials_file, std::string_view key) {
  // "proxy.corp:3128" (no scheme) is how many environments write it.
  if (auto sep = url.find("://"); sep == std::string::npos)
    url = "http://" + url;
  else if (url.substr(0, sep) != "http")
    return Error{fmt::format("{}: '{}://…': only http:// proxies are supported", key, url.substr(0, sep))};
  auto u = parse_url(url, true);
  if (!u) return Error{fmt::format("{}: {}", key, u.error().message)};
  Proxy p{u->host, u->port, {}, {}};
  if (u->user) {
    // In the environment (never on a command line) a URL may carry them; not in the
    // configuration, which get_config and every diagnostics bundle show.
    if (key.find('.') != std::string_view::npos)
      return Error{fmt::format("{}: put the user and password in proxy.credentials_file, not in the URL", key)};
    set_credentials(p, *u->user, u->password);
  }
  if (!credentials_file.empty()) {
    auto line = read_secret_file(credentials_file, "proxy.credentials_file");
    if (!line) return line.error();
    auto colon = line->reveal().find(':');
    if (colon == std::string::npos)
      return Error{fmt::format("proxy.credentials_file {}: the first line must be user:password", credentials_file)};
    set_credentials(p, line->reveal().substr(0, colon), line->reveal().substr(colon + 1));
  }
  return p;
}

Result<std::optional<Proxy>> proxy_for(std::string_view host, bool tls, const ProxyConfig& config) {
  if (host_in(host, config.no_proxy)) return std::optional<Proxy>{};
  if (!config.url.empty()) {
    auto p = parse_proxy(config.url, config.credentials_file, "proxy.url");
    if (!p) return p.error();
    return std::optional<Proxy>{std::move(*p)};
  }
  if (const char* list = env_either("no_proxy", "NO_PROXY"); list && host_in(host, split_list(list)))
    return std::optional<Proxy>{};
  const char* env = tls ? env_either("https_proxy", "HTTPS_PROXY") : env_either("http_proxy", "HTTP_PROXY");
  if (!env) return std::optional<Proxy>{};
  auto p = parse_proxy(env, config.credentials_file, tls ? "https_proxy" : "http_proxy");
  if (!p) return p.error();
  return std::optional<Proxy>{std::move(*p)};
}

asio::awaitable<Result<void>> dial(beast::tcp_stream& stream, const std::string& host, const std::string& port,
                                   const std::optional<Proxy>& proxy) {
  tcp::resolver resolver(co_await asio::this_coro::executor);
  const std::string& to_host = proxy ? proxy->host : host;
  const std::string& to_port = proxy ? proxy->port : port;
  boost::system::error_code ec;
  auto results = co_await resolver.async_resolve(to_host, to_port, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{fmt::format("cannot resolve {}: {}", to_host, io_error(ec))};
  co_await stream.async_connect(results, asio::redirect_error(asio::use_awaitable, ec));
  const std::string what = proxy ? "the proxy " + host_port(to_host, to_port) : host_port(to_host, to_port);
  if (ec) co_return Error{fmt::format("cannot connect to {}: {}", what, io_error(ec))};
  if (!proxy) co_return Result<void>{};
  http::request<http::empty_body> req{http::verb::connect, host_port(host, port), 11};
  req.set(http::field::host, host_port(host, port));
  req.set(http::field::user_agent, std::string("instanced/") + build_version());
  if (!proxy->authorization.empty()) req.set(http::field::proxy_authorization, proxy->authorization.reveal());
  co_await http::async_write(stream, req, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{fmt::format("{}: {}", what, io_error(ec))};
  beast::flat_buffer buffer;
  http::response_parser<http::empty_body> parser;
  parser.skip(true);  // a CONNECT answer has no body
  co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(asio::use_awaitable, ec));
  if (ec) co_return Error{fmt::format("{}: {}", what, io_error(ec))};
  if (auto code = parser.get().result_int(); code < 200 || code > 299)
    co_return Error{fmt::format("proxy {} refused CONNECT {}: HTTP {}{}", host_port(to_host, to_port), host_port(host, port),
                                code, code == 407 ? " (proxy authentication required: proxy.credentials_file)" : "")};
  co_return Result<void>{};
}

Result<std::vector<std::string>> proxy_environment(const ProxyConfig& config) {
  std::vector<std::string> env;
  // proxy.no_proxy always (the metadata service: a driver's managed identity token), and
  // the environment's own list when the proxy comes from the environment.
  std::vector<std::string> bypass = config.no_proxy;
  if (config.url.empty()) {
    const char* own = env_either("no_proxy", "NO_PROXY");
    if (own) bypass.insert(bypass.begin(), std::string(own));
    for (const char* name : {"https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY"})
      if (const char* v = std::getenv(name); v && *v) env.push_back(fmt::format("{}={}", name, v));
  } else {
    auto p = parse_proxy(config.url, config.credentials_file, "proxy.url");
    if (!p) return p.error();
    const std::string url = fmt::format("http://{}{}{}", p->userinfo.reveal(), p->userinfo.empty() ? "" : "@",
                                        host_port(p->host, p->port));
    for (const char* name : {"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"})
      env.push_back(fmt::format("{}={}", name, url));
  }
  if (env.empty()) return env;  // no proxy: nothing to bypass
  const std::string list = fmt::format("{}", fmt::join(bypass, ","));
  for (const char* name : {"NO_PROXY", "no_proxy"}) env.push_back(fmt::format("{}={}", name, list));
  return env;
}

}  // namespace instanced
