// What the job queue's source files share: limits, small helpers and a running job's state.
// Private to agent/jobs.
#pragma once

#include "common/message_ids.hpp"
#include "common/child_io.hpp"
#include "common/coro.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <charconv>
#include <cmath>
#include <cstring>
#include <csignal>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/jobs/jobs.hpp"
#include "agent/jobs/limits.hpp"
#include "agent/monitor/client.hpp"

namespace instanced::jobs {
namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using namespace asio::experimental::awaitable_operators;
using namespace std::chrono_literals;

inline constexpr auto kLookupTimeout = 10s;
inline constexpr auto kDrainGrace = 250ms;     // output read after the job's exit
inline constexpr auto kToolTimeout = 60s;      // podman inspect, rm, kill, image exists
inline constexpr auto kLoadTimeout = 10min;    // podman load of an image archive
inline constexpr auto kGpuRecheck = 2s;        // while a job waits for GPUs
inline constexpr auto kStoreRetry = 10s;       // while state_dir/jobs cannot be written
inline constexpr std::size_t kToolOutputMax = 64 << 10;
inline constexpr std::size_t kMaxTools = 4;  // container CLI commands of the agent's at once
inline const char* const kDefaultPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

// Of a steady or a wall clock: their durations differ in libc++ (microseconds for the wall).
template <class Rep, class Period>
inline double seconds(std::chrono::duration<Rep, Period> d) { return std::chrono::duration<double>(d).count(); }

// The variables the container CLI needs from the agent's own environment.
inline std::vector<std::string> runtime_environment() {
  std::vector<std::string> env;
  for (const char* name : {"PATH", "HOME", "TMPDIR", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "CONTAINERS_CONF",
                           "CONTAINERS_STORAGE_CONF", "CONTAINERS_REGISTRIES_CONF", "DOCKER_HOST", "DOCKER_CONFIG",
                           "DOCKER_CERT_PATH", "DOCKER_TLS_VERIFY"})
    if (const char* v = std::getenv(name)) env.push_back(std::string(name) + "=" + v);
  if (!std::getenv("PATH")) env.push_back(std::string("PATH=") + kDefaultPath);
  return env;
}

struct Jobs::Live {
  Live(asio::any_io_executor ex) : pump_done(ex, "output"), poke(ex) {}
  std::unique_ptr<Process> proc;
  std::unique_ptr<RunLog> log;
  Gate pump_done;
  Wake poke;  // pulsed when a cancel is asked for
  asio::cancellation_signal stop;  // the agent is stopping
  std::optional<ContainerRuntimeCli> cli;  // container jobs
  std::optional<monitor::Run> run;         // process jobs: their monitor
  bool cancel_sent = false;                // the monitor was asked to stop it
  std::vector<std::string> tail;           // the output's last lines, from the monitor's record
  bool cancel = false;
  std::string cancel_reason;
  bool timed_out = false;
  bool first_record = false;  // its `starting` line is its first: it had never been queued on disk
};

}  // namespace instanced::jobs
