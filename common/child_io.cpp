#include "common/child_io.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <span>
#include <vector>

namespace instanced {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

asio::awaitable<void> pump_output(Process& p, RunLog& log, Gate& done) {
  std::vector<char> buf(64 * 1024);
  try {
    for (;;) {
      std::size_t n = co_await p.read_output(std::span<char>(buf));
      if (n == 0) break;
      log.feed(std::string_view(buf.data(), n));
    }
  } catch (const boost::system::system_error&) {
    // Closed by finish_output() after its grace, or the agent is stopping.
  }
  done.open();
}

asio::awaitable<std::optional<ExitStatus>> exit_within(Process& p, Clock& clock, Clock::steady_time::duration d) {
  auto exit = p.wait();
  auto limit = clock.sleep_for(d);
  auto either = std::move(exit) || std::move(limit);
  auto r = co_await std::move(either);
  if (r.index() == 0) co_return std::get<0>(r);
  co_return p.exit_status();  // reaped right at the deadline: ended, not timed out
}

asio::awaitable<void> finish_output(Process& p, Gate& pump_done, Clock& clock, Clock::steady_time::duration grace) {
  if (!pump_done.is_open()) {
    auto drained = pump_done.wait();
    auto limit = clock.sleep_for(grace);
    auto either = std::move(drained) || std::move(limit);
    co_await std::move(either);
  }
  p.close_output();
}

}  // namespace instanced
