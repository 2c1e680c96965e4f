#include "agent/status/textfile.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <filesystem>

#include "common/coro.hpp"

namespace instanced::status {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

constexpr auto kWriteTimeout = std::chrono::seconds(10);

}  // namespace

asio::awaitable<void> write_metrics_textfile(Api& api, const Router& router, const StatusConfig& config, Wake& poke,
                                             Logger log) {
  std::string failing;  // the last failure logged ("" while writes succeed)
  for (;;) {
    if (config.textfile_dir.empty()) {
      co_await poke.wait();
      continue;
    }
    const std::filesystem::path file = std::filesystem::path(config.textfile_dir) / kTextfileName;
    Request request{http::verb::get, "/metrics", 11};  // the text /metrics serves now
    Filesystem& fs = api.fs;
    auto write = [&fs, file, text = router.handle(request).body()] { return fs.write_file_atomic(file, text, 0644, false); };
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
  }
}

}  // namespace instanced::status
