#include "common/state.hpp"

#include <algorithm>
#include <fmt/format.h>

namespace instanced {

std::string_view to_string(Health h) {
  switch (h) {
    case Health::ok: return "ok";
    case Health::starting: return "starting";
    case Health::degraded: return "degraded";
    case Health::failed: return "failed";
  }
  return "unknown";
}

Metrics::Family& Metrics::family(const std::string& name, const std::string& help, Type type) {
  auto& f = families_[name];
  if (f.help.empty()) f.help = help;
  f.type = type;
  return f;
}

void Metrics::set_gauge(const std::string& name, const std::string& help, const Labels& labels, double value) {
  family(name, help, Type::gauge).samples[labels] = value;
}

void Metrics::add_counter(const std::string& name, const std::string& help, const Labels& labels, double delta) {
  family(name, help, Type::counter).samples[labels] += delta;
}

void Metrics::set_counter(const std::string& name, const std::string& help, const Labels& labels, double total) {
  family(name, help, Type::counter).samples[labels] = total;
}

void Metrics::observe(const std::string& name, const std::string& help, const Labels& labels, double value,
                      const std::vector<double>& bounds) {
  auto& h = family(name, help, Type::histogram).histograms[labels];
  if (h.bounds.empty()) {
    h.bounds = bounds;
    h.counts.assign(bounds.size() + 1, 0);
  }
  auto bucket = std::lower_bound(h.bounds.begin(), h.bounds.end(), value) - h.bounds.begin();
  ++h.counts[static_cast<std::size_t>(bucket)];
  h.sum += value;
  ++h.count;
}

void Metrics::forget(std::string_view prefix, std::string_view label, std::string_view value) {
  auto has = [&](const Labels& ls) {
    return std::any_of(ls.begin(), ls.end(), [&](const auto& l) { return l.first == label && l.second == value; });
  };
  for (auto& [name, f] : families_) {
    if (!std::string_view(name).starts_with(prefix)) continue;
    std::erase_if(f.samples, [&](const auto& s) { return has(s.first); });
    std::erase_if(f.histograms, [&](const auto& s) { return has(s.first); });
  }
}

double& Metrics::sample(const std::string& name, const std::string& help, Type type, const Labels& labels) {
  return family(name, help, type).samples[labels];  // std::map: nodes never move
}

double Metrics::value(const std::string& name, const Labels& labels) const {
  auto it = families_.find(name);
  if (it == families_.end()) return 0;
  auto s = it->second.samples.find(labels);
  return s == it->second.samples.end() ? 0 : s->second;
}

StateRegistry::StateRegistry(Clock& clock, std::size_t max_events) : clock_(clock), max_events_(max_events) {}

void StateRegistry::publish(const std::string& subsystem, Health health, std::string summary,
                            boost::json::object details) {
  auto [it, inserted] = subsystems_.try_emplace(subsystem);
  auto& s = it->second;
  bool changed = inserted || s.health != health;
  Health before = s.health;
  s.name = subsystem;
  s.summary = std::move(summary);
  s.details = std::move(details);
  if (changed) {
    s.health = health;
    s.since = clock_.wall_now();
    boost::json::object data;
    data["from"] = inserted ? "none" : std::string(to_string(before));
    data["to"] = std::string(to_string(health));
    emit(subsystem, "state_changed", s.summary, std::move(data));
  }
}

void StateRegistry::emit(const std::string& subsystem, std::string type, std::string message,
                         boost::json::object data) {
  Event e{next_seq_++, clock_.wall_now(), subsystem, std::move(type), std::move(message), std::move(data)};
  events_.push_back(e);
  while (events_.size() > max_events_) events_.pop_front();
  metrics_.add_counter("instanced_events_total", "Events published by subsystems.",
                       {{"subsystem", subsystem}, {"type", e.type}});
  // Copy: a listener may unsubscribe itself.
  auto listeners = listeners_;
  for (auto& [id, l] : listeners) l(e);
}

void StateRegistry::remove(const std::string& subsystem) { subsystems_.erase(subsystem); }

Health StateRegistry::overall() const {
  Health worst = Health::ok;
  for (const auto& [name, s] : subsystems_) worst = std::max(worst, s.health);
  return worst;
}

std::vector<std::string> StateRegistry::problems() const {
  std::vector<std::string> out;
  for (const auto& [name, s] : subsystems_)
    if (s.health != Health::ok) out.push_back(fmt::format("{}: {} ({})", name, s.summary, to_string(s.health)));
  return out;
}

std::uint64_t StateRegistry::subscribe(Listener listener) {
  listeners_.emplace(next_listener_, std::move(listener));
  return next_listener_++;
}

void StateRegistry::unsubscribe(std::uint64_t id) { listeners_.erase(id); }

void StateRegistry::set_heartbeat_summary(const std::string& key, std::string json_object) {
  if (json_object.empty())
    heartbeat_summaries_.erase(key);
  else
    heartbeat_summaries_[key] = std::move(json_object);
}

}  // namespace instanced
