// The status socket: HTTP/1.1 over a Unix stream socket, for operators and instancectl.
// Each connection is one coroutine: peer credentials are checked first (root and the
// operators' group only), then requests are read with header/body/time limits and handed
// to the Router. At most max_connections are served at once, and at most
// max_connections_per_process from one process (more are answered 503 at once). When all
// slots are taken, a new client gets the slot of an idle connection (one waiting for a
// request), taken from the user holding the most; only when none is idle do clients wait
// in the listen backlog. So one runaway client cannot lock the operators out, and a flood
// cannot starve the loop or exhaust descriptors.
#pragma once

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/steady_timer.hpp>
#include <memory>
#include <optional>
#include <set>

#include "agent/status/router.hpp"
#include "common/api.hpp"
#include "agent/status/config.hpp"
#include "common/subsystem.hpp"
#include "common/wake.hpp"

namespace instanced::status {

class StatusServer final : public Subsystem {
 public:
  StatusServer(boost::asio::any_io_executor ex, Api& api, const StatusConfig& config, Router& router);
  ~StatusServer() override;

  // Binds the configured socket path, or adopts `activated_fd` (socket activation via
  // sd_listen_fds). Before READY=1. An error names the path and the reason.
  Result<void> open(std::optional<int> activated_fd);
  std::string name() const override { return "status"; }
  boost::asio::awaitable<void> run() override;
  // A reloaded `status` section (the socket path is kept until the next start).
  void reconfigure(const StatusConfig& config);

 private:
  struct Session;
  boost::asio::awaitable<void> accept_loop();
  boost::asio::awaitable<void> serve(std::shared_ptr<Session> session);
  boost::asio::awaitable<void> until_admissible();
  bool admit(Session& session);
  Session* idle_to_evict() const;
  void refuse(Session& session, const std::string& reason, const std::string& why);
  void resolve_group();
  void publish();
  void count_connections();

  boost::asio::any_io_executor ex_;
  Api& api_;
  StatusConfig config_;
  Router& router_;
  Logger log_;
  boost::asio::local::stream_protocol::acceptor acceptor_;
  boost::asio::steady_timer slot_freed_;
  std::set<Session*> sessions_;
  gid_t operators_gid_ = 0;
  bool activated_ = false;
  bool bound_path_ = false;
  Wake textfile_poke_;  // status.textfile_* changed
};

}  // namespace instanced::status
