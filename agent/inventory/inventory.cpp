#include "agent/inventory/inventory.hpp"

#include <boost/json.hpp>
#include <fmt/format.h>

#include "common/blocking_pool.hpp"
#include "common/http_get.hpp"
#include "common/url.hpp"

namespace instanced::inventory {
namespace asio = boost::asio;
namespace json = boost::json;

namespace {

constexpr std::size_t kMaxAnswer = 64 << 10;  // IMDS's compute document is a few KiB
constexpr std::size_t kMaxField = 256;
constexpr auto kHostTimeout = std::chrono::seconds(5);  // reading /proc and /sys
constexpr Duration kFirstRetry = std::chrono::minutes(1);  // after a metadata service failed
constexpr Duration kMaxRetry = std::chrono::hours(1);

// A string field of `o`, non-empty and at most kMaxField long; the error names it.
Result<std::string> text_field(const json::object& o, std::string_view name) {
  const auto* v = o.if_contains(name);
  if (!v) return Error{fmt::format("{}: missing", name)};
  if (!v->is_string()) return Error{fmt::format("{}: not a string", name)};
  const auto& s = v->get_string();
  if (s.empty() || s.size() > kMaxField) return Error{fmt::format("{}: empty or over {} characters", name, kMaxField)};
  return std::string(s);
}

// storageProfile.imageReference: its id (a gallery image), or publisher:offer:sku:version.
std::optional<std::string> image_of(const json::object& compute) {
  const auto* profile = compute.if_contains("storageProfile");
  const auto* ref = profile && profile->is_object() ? profile->get_object().if_contains("imageReference") : nullptr;
  if (!ref || !ref->is_object()) return std::nullopt;
  const auto& r = ref->get_object();
  if (auto id = text_field(r, "id")) return *id;
  std::string joined;
  for (const char* part : {"publisher", "offer", "sku", "version"}) {
    auto v = text_field(r, part);
    if (!v) return std::nullopt;
    joined += (joined.empty() ? "" : ":") + *v;
  }
  return joined;
}

}  // namespace

Result<json::object> parse_azure_compute(std::string_view body) {
  boost::system::error_code ec;
  json::value doc = json::parse(body, ec);
  if (ec) return Error{fmt::format("not JSON: {}", ec.message())};
  if (!doc.is_object()) return Error{"not a JSON object"};
  const auto& compute = doc.get_object();
  json::object cloud{{"provider", "azure"}};
  for (auto [field, name] : {std::pair{"vmId", "vm_id"}, {"vmSize", "size"}, {"location", "region"}}) {
    auto v = text_field(compute, field);
    if (!v) return v.error();
    cloud[name] = *v;
  }
  if (auto image = image_of(compute); image && image->size() <= kMaxField) cloud["image"] = *image;
  return cloud;
}

// The compute document at `endpoint` (http:// only: the service is link-local), as `cloud`.
asio::awaitable<Result<json::object>> fetch_cloud(const std::string& endpoint, Duration timeout) {
  auto url = parse_url(endpoint);
  if (url && url->tls) url = Error{"only http:// is supported (the service is link-local)"};
  if (!url) co_return Error{fmt::format("inventory.metadata_endpoint: {}", url.error().message)};
  const HttpHeaders headers{{"Metadata", "true"}};  // what IMDS requires of a caller
  auto answer = co_await http_get(*url, headers, timeout, kMaxAnswer);
  if (!answer) co_return answer.error();
  if (answer->status != 200) co_return Error{fmt::format("answered {}", answer->status)};
  co_return parse_azure_compute(answer->body);
}

Inventory::Inventory(Api& api, const InventoryConfig& config, GpuPart gpus, std::filesystem::path root)
    : api_(api),
      config_(config),
      gpus_(std::move(gpus)),
      root_(std::move(root)),
      log_(api.logging.get("inventory")) {}

asio::awaitable<json::object> Inventory::get() {
  auto read = [root = root_] { return host_part(root); };
  auto host = co_await api_.pool.run("reading the host's inventory", kHostTimeout, read);
  json::object all = host ? std::move(*host) : json::object{};
  if (!host) log_->warn("inventory: {}", host.error().message);
  all["agent"] = agent_part();
  if (gpus_)
    if (auto g = gpus_(); !g.empty()) all["gpu"] = std::move(g);
  const bool changed = asked_ != config_.metadata_endpoint;
  const bool retry = cloud_.empty() && !config_.metadata_endpoint.empty() && api_.clock.now() >= retry_at_;
  if (!asking_ && (changed || retry)) co_await ask_metadata();
  if (!cloud_.empty()) all["cloud"] = cloud_;
  co_return all;
}

// Its answer kept for the agent's run; none: asked again at a later inventory, after a
// pause doubling from a minute to an hour (IMDS may not answer yet just after boot).
asio::awaitable<void> Inventory::ask_metadata() {
  const std::string endpoint = config_.metadata_endpoint;
  if (asked_ != endpoint) {
    cloud_ = {};
    retry_after_ = kFirstRetry;
  }
  asked_ = endpoint;
  if (endpoint.empty()) co_return;
  asking_ = true;
  struct Done {
    bool& asking;
    ~Done() { asking = false; }
  } done{asking_};
  auto cloud = co_await fetch_cloud(endpoint, config_.metadata_timeout);
  if (!cloud) {
    retry_at_ = api_.clock.now() + retry_after_;
    log_->info("no VM identity from the metadata service at {}: {}; asked again in {}", endpoint,
               cloud.error().message, format_duration(retry_after_));
    retry_after_ = std::min(retry_after_ * 2, kMaxRetry);
    co_return;
  }
  cloud_ = std::move(*cloud);
  log_->info("VM identity from the metadata service: {} ({}, {})", std::string(cloud_.at("vm_id").as_string()),
             std::string(cloud_.at("size").as_string()), std::string(cloud_.at("region").as_string()));
}

}  // namespace instanced::inventory
