// The diagnostics bundle (docs/diagnostics.md): a bounded .tar.gz of what a support
// engineer needs from a VM they cannot log in to: the agent's journal, its effective
// configuration (secrets as ***), its state files, every status view, the mount table,
// the kernel log's tail, nvidia-smi -q, the setup scripts' and jobs' log tails. Asked for
// by the control plane (collect_diagnostics, uploaded to a pre-signed URL) or through the
// status socket (instancectl diagnostics: fetched, or uploaded). One at a time; made in
// state_dir/diagnostics, where the last bundle is kept for diagnostics.keep_for.
//
// Nothing secret leaves: the value of every secret file the configuration names is
// replaced by *** in every file before it is packed, whatever wrote it there.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "agent/diagnostics/config.hpp"
#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "common/process.hpp"
#include "common/proxy_config.hpp"
#include "common/secret.hpp"
#include "common/subsystem.hpp"
#include "common/url.hpp"
#include "common/wake.hpp"

namespace instanced::control {
class CommandRegistry;
}  // namespace instanced::control

namespace instanced::diagnostics {

// What a part's producer made: its bytes, and what went wrong or was cut ("": nothing).
struct Produced {
  std::uint64_t bytes = 0;
  std::string problem;
};

// Where the bundle's parts come from, outside this subsystem (wired in main.cpp).
struct Sources {
  const status::Router* router = nullptr;  // every GET view that answers without parameters
  std::function<std::string()> effective_config;              // as --check-config prints it
  std::function<std::vector<std::string>()> secret_files;     // files whose values are secret
  std::function<boost::asio::awaitable<boost::json::object>()> inventory;
  std::function<std::optional<std::string>()> refusal;        // a reason not to write now (the disk rule)
  std::function<std::vector<std::pair<std::string, std::string>>()> log_dirs;  // {"setup", DIR}, {"jobs", DIR}
};

class Diagnostics final : public Subsystem {
 public:
  Diagnostics(boost::asio::any_io_executor ex, Api& api, ProcessRunner& runner, const DiagnosticsConfig& config,
              const ProxyConfig& proxy, std::string state_dir, Sources sources);
  ~Diagnostics() override;

  std::string name() const override { return "diagnostics"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `diagnostics` section and `proxy` (the upload's).
  void reconfigure(const DiagnosticsConfig& config, const ProxyConfig& proxy);

  enum class Answer { started, invalid, refused };
  struct Start {
    Answer answer = Answer::started;
    std::string id_or_error;
  };
  // Starts a bundle, and its upload when `upload_url` is not empty (http(s), its query the
  // SAS). `requested_by`: "control plane", "status socket".
  Start start(const std::string& upload_url, std::string requested_by);
  struct Outcome {
    bool ok = false;            // ready or uploaded
    boost::json::object status;  // as status_json() said when it ended
    std::string error;
  };
  // Until the bundle `id` is made (and uploaded, or not): how it ended. The agent's stop is thrown.
  boost::asio::awaitable<Outcome> finished(std::string id);

  // GET /v1/diagnostics: the bundle being made or the last one.
  boost::json::object status_json() const;
  void add_routes(status::Router& router);
  void add_commands(control::CommandRegistry& commands);

 private:
  struct Run {
    std::string id;
    std::string requested_by;
    std::optional<Url> upload;  // its target holds the SAS: never shown
    std::string state = "queued";  // collecting, packing, uploading; ready, uploaded, failed
    std::string step;
    int steps_done = 0;
    int steps = 0;
    std::uint64_t bytes = 0;
    std::string sha256;
    std::uint64_t sent = 0;
    int attempts = 0;
    std::uint64_t redacted = 0;
    std::string error;
    std::vector<std::string> problems;  // parts left out or cut short, and why
    Clock::wall_time started{};
    std::optional<Clock::wall_time> ended;
    Clock::steady_time expires = Clock::steady_time::max();
    bool kept = false;  // the bundle file is there to fetch
    bool done() const { return state == "ready" || state == "uploaded" || state == "failed"; }
  };

  struct Build;
  using StepFn = boost::asio::awaitable<void> (Diagnostics::*)(Build&);

  boost::asio::awaitable<void> make();
  boost::asio::awaitable<Result<void>> build();
  boost::asio::awaitable<Result<void>> collect(Build& b);
  boost::asio::awaitable<Result<void>> pack(Build& b);
  boost::asio::awaitable<void> upload();
  void end(std::string error);
  boost::asio::awaitable<void> clear();

  // The steps, in order (the journal last: it takes what is left of the cap).
  boost::asio::awaitable<void> views(Build& b);
  boost::asio::awaitable<void> configuration(Build& b);
  boost::asio::awaitable<void> inventory(Build& b);
  boost::asio::awaitable<void> state_files(Build& b);
  boost::asio::awaitable<void> system(Build& b);
  boost::asio::awaitable<void> gpu(Build& b);
  boost::asio::awaitable<void> logs(Build& b);
  boost::asio::awaitable<void> journal(Build& b);

  // One file of the bundle: made by `produce` on the pool, within the bytes the cap leaves
  // (it says what it wrote, and a problem or ""), or a tool's output: its last `cap` bytes.
  // A part whose work ran past diagnostics.tool_timeout abandons the bundle.
  using Producer = std::function<Produced(const std::filesystem::path& out, std::uint64_t cap)>;
  boost::asio::awaitable<void> add_file(Build& b, std::string name, Producer produce);
  boost::asio::awaitable<void> add_tool(Build& b, std::string name, std::vector<std::string> argv, std::uint64_t cap);
  void record(Build& b, const std::string& name, std::uint64_t bytes, const std::string& problem);
  void abandon(Build& b, const Error& e);

  std::filesystem::path folder() const;
  std::filesystem::path bundle_file() const;
  void publish();

  boost::asio::any_io_executor ex_;
  Api& api_;
  ProcessRunner& runner_;
  DiagnosticsConfig config_;
  ProxyConfig proxy_;
  std::string state_dir_;
  Sources sources_;
  Logger log_;
  Wake requested_;
  Wake ended_;
  std::unique_ptr<Run> run_;  // the bundle being made, or the last one
  std::map<std::string, Outcome> outcomes_;  // of the last bundles, by id
};

}  // namespace instanced::diagnostics
