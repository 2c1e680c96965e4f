#include "agent/status/textfile.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <filesystem>

#include "common/coro.hpp"

namespace instanced::status {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kWriteTimeout = std::chrono::seconds(10);

// The text /metrics serves now, and the file's path.
std::pair<std::filesystem::path, std::string> rendered(const Router& router, const StatusConfig& config) {
  Request request{http::verb::get, "/metrics", 11};
  return {std::filesystem::path(config.textfile_dir) / kTextfileName, router.handle(request).body()};
}

}  // namespace

asio::awaitable<void> write_metrics_textfile(Api& api, const Router& router, const StatusConfig& config, Wake& poke,
                                             Logger log) {
  std::string failing;  // the last failure logged ("" while writes succeed)
  for (;;) {
    if (!config.textfile_dir.empty()) {
      auto made = rendered(router, config);
      const std::filesystem::path file = made.first;
      std::string text = std::move(made.second);
      Filesystem& fs = api.fs;
      auto write = [&fs, file, text = std::move(text)] { return fs.write_file_atomic(file, text, 0644, false); };
      const std::string what = "writing " + file.string();
      auto wrote = co_await api.pool.run(what, kWriteTimeout, write);
      if (!wrote && wrote.error().message != failing) {
        failing = wrote.error().message;
        log->warn("status.textfile_dir: {}", failing);
      } else if (wrote && !failing.empty()) {
        failing.clear();
        log->info("status.textfile_dir: {} written again", file.string());
      }
      auto next = api.clock.sleep_for(config.textfile_interval);
      auto changed = poke.wait();
      auto either = std::move(next) || std::move(changed);
      co_await first_error(std::move(either));
    } else {
      co_await poke.wait();
    }
  }
}

}  // namespace instanced::status
