// The one place where subsystems publish their current state, their events and their
// metrics. /v1/status, /v1/health, /metrics, instancectl and (later) the control-plane
// heartbeat all read from here, so a subsystem is written once and shows up everywhere.
// Lives on the event loop: call it only from the loop's thread.
#pragma once

#include <boost/json/object.hpp>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "common/clock.hpp"

namespace instanced {

// Ordered from best to worst; the overall state is the worst of all subsystems.
enum class Health { ok, starting, degraded, failed };
std::string_view to_string(Health h);

struct SubsystemState {
  std::string name;
  Health health = Health::starting;
  std::string summary;          // one line for people
  boost::json::object details;  // the subsystem's own section of /v1/status
  Clock::wall_time since{};     // when `health` last changed
};

struct Event {
  std::uint64_t seq = 0;
  Clock::wall_time time{};
  std::string subsystem;
  std::string type;  // "state_changed" for transitions; subsystems add their own
  std::string message;
  boost::json::object data;
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Prometheus-style metrics that subsystems set; rendered by the status server.
// Bucket bounds (seconds) for probe and command durations: 5 ms to 30 s.
inline const std::vector<double> kLatencyBuckets{0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};

class Metrics {
 public:
  enum class Type { gauge, counter, histogram };
  struct Histogram {
    std::vector<double> bounds;          // upper bounds of the buckets, ascending (+Inf implied)
    std::vector<std::uint64_t> counts;   // per bucket, not cumulative; one more for +Inf
    double sum = 0;
    std::uint64_t count = 0;
  };
  struct Family {
    std::string help;
    Type type = Type::gauge;
    std::map<Labels, double> samples;
    std::map<Labels, Histogram> histograms;
  };

  void set_gauge(const std::string& name, const std::string& help, const Labels& labels, double value);
  void add_counter(const std::string& name, const std::string& help, const Labels& labels, double delta = 1);
  // A total kept by the source itself (NVML's ECC and PCIe replay counters): a counter,
  // which may start again from zero (a driver reload), as Prometheus' rate() allows.
  void set_counter(const std::string& name, const std::string& help, const Labels& labels, double total);
  // One observation of a duration (seconds) into a histogram with these bucket bounds.
  void observe(const std::string& name, const std::string& help, const Labels& labels, double value,
               const std::vector<double>& bounds);
  // Every series of the families named `prefix...` that has label `label` = `value` is
  // dropped: what a reload removed (an app, a setup script) stops being reported.
  void forget(std::string_view prefix, std::string_view label, std::string_view value);
  const std::map<std::string, Family>& families() const { return families_; }
  double value(const std::string& name, const Labels& labels = {}) const;
  // The stored value of one sample, for code on a hot path that updates it often (a
  // heartbeat): the reference stays valid for the registry's life.
  double& sample(const std::string& name, const std::string& help, Type type, const Labels& labels = {});

 private:
  Family& family(const std::string& name, const std::string& help, Type type);
  std::map<std::string, Family> families_;
};

class StateRegistry {
 public:
  using Listener = std::function<void(const Event&)>;

  explicit StateRegistry(Clock& clock, std::size_t max_events = 512);

  // Sets a subsystem's state; a change of health is recorded as a "state_changed" event
  // carrying the summary as its reason.
  void publish(const std::string& subsystem, Health health, std::string summary,
               boost::json::object details = {});
  void emit(const std::string& subsystem, std::string type, std::string message,
            boost::json::object data = {});
  void remove(const std::string& subsystem);

  const std::map<std::string, SubsystemState>& subsystems() const { return subsystems_; }
  const std::deque<Event>& events() const { return events_; }
  Health overall() const;
  // "subsystem: summary" for every subsystem that is not ok.
  std::vector<std::string> problems() const;

  std::uint64_t subscribe(Listener listener);
  void unsubscribe(std::uint64_t id);

  // A compact JSON object a subsystem adds to every heartbeat under `key` (the GPU summary
  // under "gpu"); keep it to a few dozen bytes. An empty text removes it.
  void set_heartbeat_summary(const std::string& key, std::string json_object);
  const std::map<std::string, std::string>& heartbeat_summaries() const { return heartbeat_summaries_; }

  Metrics& metrics() { return metrics_; }
  const Metrics& metrics() const { return metrics_; }

 private:
  Clock& clock_;
  std::size_t max_events_;
  std::map<std::string, SubsystemState> subsystems_;
  std::deque<Event> events_;
  std::uint64_t next_seq_ = 1;
  std::map<std::uint64_t, Listener> listeners_;
  std::uint64_t next_listener_ = 1;
  Metrics metrics_;
  std::map<std::string, std::string> heartbeat_summaries_;
};

}  // namespace instanced
