#include "agent/power/power.hpp"

#include <boost/asio/experimental/awaitable_operators.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include "common/message_ids.hpp"
#include "common/coro.hpp"

namespace instanced::power {
namespace asio = boost::asio;
using namespace asio::experimental::awaitable_operators;

namespace {
constexpr auto kBusTimeout = std::chrono::seconds(10);  // sd-bus's own call timeout is 25 s
}  // namespace

Power::Power(asio::any_io_executor ex, Api& api, ServiceManager& services, Logind& logind, const PowerConfig& config,
             Deliver deliver)
    : ex_(std::move(ex)), api_(api), services_(services), logind_(logind), config_(config),
      deliver_(std::move(deliver)), log_(api.logging.get("power")) {}

void Power::publish() {
  api_.state.publish("power", Health::ok, reported_ ? "the system is shutting down (reported)" : watching_,
                     {{"watching", watching_}, {"os_shutdown_reported", reported_}, {"logind_lock", logind_.holding()}});
}

asio::awaitable<void> Power::report(std::string source, std::string detail) {
  if (reported_) co_return;
  reported_ = true;
  std::string msg = fmt::format("the system is being shut down from inside the VM ({})", detail);
  {
    LogFields fields{{"MESSAGE_ID", msgid::kOsShutdown}};
    log_->warn("{}; telling the control plane", msg);
  }
  api_.state.emit("power", "os_shutdown", msg, {{"source", source}, {"detail", detail}});
  publish();
  bool delivered = false;
  if (deliver_) delivered = co_await deliver_(config_.report_wait);
  if (delivered)
    log_->info("os_shutdown delivered to the control plane");
  else
    log_->warn("os_shutdown not acknowledged within {}: it stays in the outbox for the next connection",
               format_duration(config_.report_wait));
}

asio::awaitable<void> Power::watch_logind() {
  asio::posix::stream_descriptor bus(ex_, dup(logind_.fd()));
  for (;;) {
    auto got = logind_.process();
    if (!got) {
      log_->warn("logind: {}; a shutdown is now noticed through SIGTERM only", got.error().message);
      watching_ = "SIGTERM while systemd is stopping (the system bus connection ended)";
      publish();
      co_return;
    }
    for (bool going_down : *got) {
      if (going_down) {
        const std::string source = "logind", detail = "logind's PrepareForShutdown";
        co_await report(source, detail);
        logind_.release();  // let the shutdown go on
      } else {
        log_->info("logind: the shutdown was cancelled");
        reported_ = false;
        // A D-Bus call waits for its answer: off the loop, bounded.
        Logind* l = &logind_;
        auto take = [l] { return l->inhibit(); };
        const std::string what = "taking logind's delay lock again";
        auto r = co_await api_.pool.run(what, kBusTimeout, take);
        if (!r) log_->warn("{}", r.error().message);
        api_.state.emit("power", "os_shutdown_cancelled", "the shutdown from inside the VM was cancelled");
      }
      publish();
    }
    // What a call above read along with its answer is queued inside sd-bus, not on the
    // socket: process it before waiting for the socket.
    if (!got->empty()) continue;
    co_await bus.async_wait(asio::posix::stream_descriptor::wait_read, asio::use_awaitable);
  }
}

asio::awaitable<void> Power::run() {
  co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
  watching_ = "SIGTERM while systemd is stopping";
  bool logind = false;
  if (config_.logind) {
    // Connecting and the Inhibit call wait for answers: off the loop, bounded.
    Logind* l = &logind_;
    auto connect = [l] { return l->open(); };
    const std::string what = "connecting to logind";
    if (auto r = co_await api_.pool.run(what, kBusTimeout, connect); r) {
      logind = true;
      watching_ = "logind's PrepareForShutdown (delay lock held), and SIGTERM while systemd is stopping";
    } else {
      log_->info("logind not used: {}; a shutdown is noticed through SIGTERM while systemd is stopping",
                 r.error().message);
    }
  }
  publish();
  bool stopping = false;
  try {
    if (logind) co_await watch_logind();
    for (;;) co_await api_.clock.sleep_for(std::chrono::hours(24));
  } catch (const boost::system::system_error& e) {
    if (!is_cancelled(e)) throw;
    stopping = true;
  }
  if (!stopping || reported_) co_return;
  // The agent is stopping: is the whole system going down? Asked with the time left.
  co_await asio::this_coro::throw_if_cancelled(false);
  co_await asio::this_coro::reset_cancellation_state();
  auto asked = services_.system_state();
  auto limit = api_.clock.sleep_for(config_.report_wait);
  auto race = std::move(asked) || std::move(limit);
  auto either = co_await first_error(std::move(race));
  if (either.index() == 1) {
    log_->warn("stopping; systemctl is-system-running gave no answer within {}", format_duration(config_.report_wait));
    co_return;
  }
  auto state = std::get<0>(either);
  if (!state) {
    log_->info("stopping; whether the system goes down is not known: {}", state.error().message);
    co_return;
  }
  if (*state == "stopping") {
    const std::string source = "sigterm", detail = "SIGTERM while systemd is stopping the system";
    co_await report(source, detail);
  }
}

}  // namespace instanced::power
