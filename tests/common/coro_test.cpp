// The coroutine rules every subsystem's stop relies on (common/coro.hpp), on a real
// io_context: a cancelled race whose two sides both fail is a cancellation, a gate wait
// inside a race hears the daemon's one terminal cancellation, and a cleanup step after it
// is not aborted.
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <catch2/catch.hpp>
#include <functional>
#include <optional>
#include <string>

#include "common/coro.hpp"
#include "common/gate.hpp"

using namespace instanced;
using namespace std::chrono_literals;
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {

asio::awaitable<void> sleep_long() {
  asio::steady_timer t(co_await asio::this_coro::executor, 1h);
  co_await t.async_wait(asio::use_awaitable);  // throws operation_aborted when cancelled
}

// Runs `body` as a subsystem is run, cancels it once with `terminal` after it started, and
// returns what it ended with ("" for a normal return).
std::string cancelled_once(const std::function<asio::awaitable<void>()>& body,
                           std::initializer_list<asio::cancellation_type> types = {asio::cancellation_type::terminal}) {
  asio::io_context ioc;
  asio::cancellation_signal stop;
  std::optional<std::string> ended;
  asio::co_spawn(ioc, body(), asio::bind_cancellation_slot(stop.slot(), [&](std::exception_ptr e) {
                   ended = "";
                   if (!e) return;
                   try {
                     std::rethrow_exception(e);
                   } catch (const boost::system::system_error& ex) {
                     ended = ex.code() == asio::error::operation_aborted ? "aborted" : ex.what();
                   } catch (const std::exception& ex) {
                     ended = std::string("other: ") + ex.what();
                   }
                 }));
  ioc.run_for(20ms);
  for (auto type : types) {
    stop.emit(type);
    ioc.run_for(200ms);
  }
  return ended.value_or("still running");
}

}  // namespace

TEST_CASE("a cancelled race whose sides both fail ends as a cancellation, not multiple_exceptions", "[coro]") {
  auto raw = [] () -> asio::awaitable<void> {
    auto race = sleep_long() || sleep_long();
    co_await std::move(race);
  };
  CHECK(cancelled_once(raw).starts_with("other: "));  // what Asio does by itself
  auto wrapped = [] () -> asio::awaitable<void> {
    auto race = sleep_long() || sleep_long();
    co_await first_error(std::move(race));
  };
  CHECK(cancelled_once(wrapped) == "aborted");
}

TEST_CASE("a gate wait inside a race hears one terminal cancellation, and the cleanup after it runs", "[coro]") {
  bool cleaned = false;
  auto body = [&]() -> asio::awaitable<void> {
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    Gate gate(co_await asio::this_coro::executor, "closed");
    asio::steady_timer wake(co_await asio::this_coro::executor, 1h);
    bool stopping = false;
    try {
      boost::system::error_code ec;
      auto opened = gate.wait();
      auto woken = wake.async_wait(asio::redirect_error(asio::use_awaitable, ec));
      auto either = std::move(opened) || std::move(woken);
      co_await first_error(std::move(either));
      auto cs = co_await asio::this_coro::cancellation_state;  // the wake side ends without throwing
      stopping = cs.cancelled() != asio::cancellation_type::none;
    } catch (const boost::system::system_error&) {
      stopping = true;
    }
    if (!stopping) co_return;
    co_await asio::this_coro::reset_cancellation_state(ignore_cancellation);
    asio::steady_timer flush(co_await asio::this_coro::executor, 10ms);  // stands for a bounded flush
    co_await flush.async_wait(asio::use_awaitable);
    cleaned = true;
  };
  SECTION("terminal, as the daemon stops a subsystem") {
    CHECK(cancelled_once(body) == "");
    CHECK(cleaned);
  }
  SECTION("total, then terminal (the daemon's old two steps): a race forwards only the first, which its children "
          "filter out") {
    CHECK(cancelled_once(body, {asio::cancellation_type::total, asio::cancellation_type::terminal}) == "still running");
  }
}
