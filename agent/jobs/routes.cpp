// The queue's views: /v1/jobs and its routes, the published state.
#include "agent/jobs/internal.hpp"

namespace instanced::jobs {

// ---- views --------------------------------------------------------------------------------

std::optional<json::object> Jobs::job_json(const std::string& id) const {
  auto it = jobs_.find(id);
  if (it == jobs_.end()) return std::nullopt;
  const JobRecord& j = *it->second;
  json::object o = j.to_json();
  if (j.state == JobState::queued) {
    o["position"] = position(j);
    if (auto w = waiting_reason(j)) o["waiting"] = *w;
  }
  if (auto l = live_.find(id); l != live_.end() && l->second->log) o["output_bytes"] = l->second->log->produced();
  return o;
}

json::object Jobs::status_json(std::size_t max_queued_shown, std::size_t max_finished_shown) const {
  json::array running, queued, finished;
  for (const auto& [id, live] : live_) {
    json::object o = jobs_.at(id)->to_json();
    if (live->log) o["output_bytes"] = live->log->produced();
    running.push_back(std::move(o));
  }
  std::size_t pos = 0;
  bool gpu_blocked = false;
  for (const auto& [seq, j] : queue_) {
    if (++pos > max_queued_shown) break;
    json::object o{{"id", j->spec.id}, {"position", pos}, {"submitted", iso8601(j->submitted)}};
    if (!j->spec.image.empty()) o["image"] = j->spec.image;
    json::array cmd;
    for (const auto& a : j->spec.command) cmd.emplace_back(a);
    o["command"] = std::move(cmd);
    if (j->spec.gpus.any()) o["gpus"] = j->spec.gpus.all ? json::value("all") : json::value(j->spec.gpus.count);
    auto w = waiting_reason(*j);
    if (j->spec.gpus.any() && gpu_blocked && !w) w = "waiting behind an earlier GPU job";
    if (j->spec.gpus.any() && w) gpu_blocked = true;
    if (w) o["waiting"] = *w;
    queued.push_back(std::move(o));
  }
  for (auto it = finished_.rbegin(); it != finished_.rend() && finished.size() < max_finished_shown; ++it)
    if (auto j = jobs_.find(it->second); j != jobs_.end()) finished.push_back(j->second->to_json());
  json::object out{{"enabled", config_.enabled},
                   {"slots", slots_},
                   {"running_count", live_.size()},
                   {"queued_count", queue_.size()},
                   {"finished_count", finished_.size()},
                   {"accepting", config_.enabled && api_.clock.now() >= hold_until_},
                   {"running", std::move(running)},
                   {"queued", std::move(queued)},
                   {"finished", std::move(finished)}};
  if (store_error_) out["error"] = *store_error_;
  return out;
}

void Jobs::publish() {
  auto& m = api_.state.metrics();
  m.set_gauge("instanced_jobs_queued", "Jobs waiting in the queue", {}, static_cast<double>(queue_.size()));
  m.set_gauge("instanced_jobs_running", "Jobs starting or running", {}, static_cast<double>(live_.size()));
  m.set_gauge("instanced_jobs_slots", "Jobs that may run at once", {}, static_cast<double>(slots_));
  m.sample("instanced_jobs_started_total", "Jobs started", Metrics::Type::counter) = static_cast<double>(started_total_);
  m.sample("instanced_jobs_wait_seconds_total", "Seconds that started jobs waited in the queue, summed",
           Metrics::Type::counter) = wait_seconds_total_;
  Health h = Health::ok;
  std::string summary;
  if (!config_.enabled) {
    summary = "disabled";
  } else if (store_error_) {
    h = Health::degraded;
    summary = "the job state cannot be written: " + *store_error_;
  } else {
    summary = fmt::format("{} of {} slots in use, {} queued", live_.size(), slots_, queue_.size());
    if (!queue_.empty())
      if (auto w = waiting_reason(*queue_.begin()->second)) summary += " (" + *w + ")";
  }
  api_.state.publish("jobs", h, summary,
                     {{"slots", slots_}, {"running", live_.size()}, {"queued", queue_.size()}});
  api_.state.set_heartbeat_summary("jobs", fmt::format("{{\"r\":{},\"q\":{}}}", live_.size(), queue_.size()));
}

void Jobs::add_routes(status::Router& router) {
  using S = status::http::status;
  router.add(status::http::verb::get, "/v1/jobs", [this](const status::Request&) {
    return status::json_response(S::ok, json::serialize(status_json()));
  });
  router.add_async(status::http::verb::post, "/v1/jobs", [this](const status::Request& req) { return submit_response(req); });
  router.add(status::http::verb::get, "/v1/jobs/job", [this](const status::Request& req) {
    auto id = status::query_param(req, "id");
    if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
    auto j = job_json(*id);
    if (!j) return status::error_response(S::not_found, fmt::format("no job '{}'", *id));
    return status::json_response(S::ok, json::serialize(*j));
  });
  router.add(status::http::verb::get, "/v1/jobs/log", [this](const status::Request& req) { return log_response(req); });
  router.add(status::http::verb::post, "/v1/jobs/cancel", [this](const status::Request& req) {
    auto id = status::query_param(req, "id");
    if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
    auto r = cancel(*id);
    if (!r) return status::error_response(jobs_.contains(*id) ? S::conflict : S::not_found, r.error().message);
    return status::json_response(S::ok, json::serialize(*r));
  });
}

asio::awaitable<status::Response> Jobs::submit_response(const status::Request& req) {
  using S = status::http::status;
  boost::system::error_code ec;
  json::parse_options opt;
  opt.max_depth = 16;
  auto v = json::parse(req.body(), ec, {}, opt);
  if (ec || !v.is_object()) co_return status::error_response(S::bad_request, "the body must be a job as a JSON object (docs/jobs.md)");
  auto spec = parse_job_spec(v.as_object(), config_);
  if (!spec) co_return status::error_response(S::bad_request, spec.error().message);
  std::optional<unsigned> owner;
  if (auto uid = req[status::kPeerUidHeader]; !uid.empty() && uid != "0") {
    unsigned n = 0;
    auto [p, ec2] = std::from_chars(uid.data(), uid.data() + uid.size(), n);
    if (ec2 != std::errc()) co_return status::error_response(S::forbidden, "the caller's uid is unknown");
    if (!spec->user.empty())
      co_return status::error_response(S::forbidden, "user: only root may choose the user of a job; an operator's jobs "
                                                  "run as the operator");
    // Root loads the archive: it could retag an image that root's jobs run.
    if (!spec->image_archive.empty())
      co_return status::error_response(S::forbidden, "image_archive: only root may load images for jobs");
    owner = n;
  }
  auto r = co_await submit(std::move(*spec), owner);
  switch (r.kind) {
    case Submitted::Kind::accepted: co_return status::json_response(S::accepted, json::serialize(r.job));
    case Submitted::Kind::duplicate: co_return status::json_response(S::ok, json::serialize(r.job));
    case Submitted::Kind::invalid: co_return status::error_response(S::bad_request, r.error);
    case Submitted::Kind::conflict: co_return status::error_response(S::conflict, r.error);
    case Submitted::Kind::refused: break;
  }
  co_return status::error_response(S::service_unavailable, r.error);
}

status::Response Jobs::log_response(const status::Request& req) const {
  using S = status::http::status;
  auto id = status::query_param(req, "id");
  if (!id || id->empty()) return status::error_response(S::bad_request, "id: missing (?id=JOB)");
  auto offset = status::offset_param(req, "from");
  if (!offset) return status::error_response(S::bad_request, "from: not a byte offset");
  const std::uint64_t from = *offset;
  auto it = jobs_.find(*id);
  if (it == jobs_.end()) return status::error_response(S::not_found, fmt::format("no job '{}'", *id));
  const JobRecord& j = *it->second;
  constexpr std::size_t kChunk = 1 << 20;
  LogChunk chunk;
  bool running = false;
  if (is_finished(j.state)) {
    // Recorded: from the finished log, also while its container is being removed.
    if (!j.log.empty()) chunk = read_finished_log(j.log, j.layout, from, kChunk);
  } else if (auto l = live_.find(*id); l != live_.end() && l->second->log) {
    chunk = l->second->log->read(from, kChunk);
    running = true;
  } else if (l != live_.end() && l->second->run) {
    // From the monitor's log and shared tail; nothing for a moment as it starts or ends.
    if (auto c = l->second->run->read_log(j.log, from, kChunk)) chunk = std::move(*c);
    running = true;
  } else {
    running = true;  // queued, starting, or between its start and its monitor's first word
  }
  if (chunk.next == 0) chunk.next = from;
  auto res = status::log_chunk_response(std::move(chunk), running);
  res.set("X-Instanced-State", std::string(to_string(j.state)));
  return res;
}

}  // namespace instanced::jobs
