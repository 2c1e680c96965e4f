// The bundle on the status socket (instancectl diagnostics) and the control plane's
// collect_diagnostics (docs/diagnostics.md).
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <fcntl.h>
#include <unistd.h>

#include "agent/control/commands.hpp"
#include "agent/diagnostics/diagnostics.hpp"

namespace instanced::diagnostics {
namespace json = boost::json;
using control::CommandResult;
using control::Status;
using S = status::http::status;

namespace {

constexpr std::size_t kMaxUrl = 8 << 10;
constexpr std::size_t kChunk = 1 << 20;  // one GET of the bundle

// A bundle holds the agent's journal, the kernel log and the agent's state: root's to make
// and fetch (the status socket's operators may watch it being made).
constexpr const char* kRootOnly =
    "only root may make or fetch a diagnostics bundle: it holds the agent's journal, the kernel log and its state";
bool from_root(const status::Request& req) { return req[status::kPeerUidHeader] == "0"; }

// {"upload_url": URL} (or no body at all): the URL, or what is wrong.
Result<std::string> upload_url_of(std::string_view body) {
  if (body.empty()) return std::string();
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 4;
  auto v = json::parse(body, ec, {}, opt);
  if (ec || !v.is_object()) return Error{"the body must be a JSON object: {\"upload_url\": URL} or nothing"};
  const auto* url = v.as_object().if_contains("upload_url");
  if (!url) return std::string();
  if (!url->is_string() || url->as_string().size() > kMaxUrl)
    return Error{fmt::format("upload_url: must be a string of at most {} bytes", kMaxUrl)};
  return std::string(url->as_string());
}

// Bytes [from, from + kChunk) of `file`.
Result<std::string> read_chunk(const std::filesystem::path& file, std::uint64_t from) {
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) return Error{fmt::format("{}: {}", file.string(), std::strerror(errno))};
  std::string data(kChunk, '\0');
  ssize_t n = ::pread(fd.get(), data.data(), data.size(), static_cast<off_t>(from));
  if (n < 0) return Error{fmt::format("{}: {}", file.string(), std::strerror(errno))};
  data.resize(static_cast<std::size_t>(n));
  return data;
}

}  // namespace

void Diagnostics::add_routes(status::Router& router) {
  router.add(status::http::verb::get, "/v1/diagnostics", [this](const status::Request&) {
    return status::json_response(S::ok, json::serialize(status_json()));
  });
  router.add(status::http::verb::post, "/v1/diagnostics", [this](const status::Request& req) {
    if (!from_root(req)) return status::error_response(S::forbidden, kRootOnly);
    auto url = upload_url_of(req.body());
    if (!url) return status::error_response(S::bad_request, url.error().message);
    auto s = start(*url, "status socket");
    if (s.answer != Answer::started)
      return status::error_response(s.answer == Answer::invalid ? S::bad_request : S::conflict, s.id_or_error);
    return status::json_response(S::accepted, json::serialize(json::object{{"id", s.id_or_error}}));
  });
  // The bundle's bytes from ?from=N (X-Instanced-Next: the offset to ask for next;
  // X-Instanced-Size: the whole size).
  router.add(status::http::verb::get, "/v1/diagnostics/bundle", [this](const status::Request& req) {
    if (!from_root(req)) return status::error_response(S::forbidden, kRootOnly);
    if (!run_ || !run_->kept) return status::error_response(S::not_found, "no diagnostics bundle is kept");
    auto from = status::offset_param(req, "from");
    if (!from) return status::error_response(S::bad_request, "from: must be a byte offset");
    auto data = read_chunk(bundle_file(), std::min(*from, run_->bytes));
    if (!data) return status::error_response(S::internal_server_error, data.error().message);
    const std::uint64_t next = std::min(*from, run_->bytes) + data->size();
    auto res = status::text_response(S::ok, std::move(*data), "application/gzip");
    res.set("X-Instanced-Next", std::to_string(next));
    res.set("X-Instanced-Size", std::to_string(run_->bytes));
    res.set("X-Instanced-Id", run_->id);
    return res;
  });
}

// collect_diagnostics {upload_url}: answered once the bundle is uploaded, or not.
void Diagnostics::add_commands(control::CommandRegistry& commands) {
  commands.add("collect_diagnostics", [this](const json::object& args) -> boost::asio::awaitable<CommandResult> {
    const auto* url = args.if_contains("upload_url");
    if (!url || !url->is_string() || url->as_string().empty() || url->as_string().size() > kMaxUrl)
      co_return CommandResult{Status::invalid, {},
                              fmt::format("args.upload_url: must be a pre-signed URL of the blob to write (a string "
                                          "of 1 to {} bytes)", kMaxUrl)};
    auto s = start(std::string(url->as_string()), "control plane");
    if (s.answer != Answer::started)
      co_return CommandResult{s.answer == Answer::invalid ? Status::invalid : Status::refused, {}, s.id_or_error};
    auto waiting = finished(s.id_or_error);
    Outcome outcome = co_await std::move(waiting);
    co_return CommandResult{outcome.ok ? Status::ok : Status::failed, std::move(outcome.status), outcome.error};
  });
}

}  // namespace instanced::diagnostics
