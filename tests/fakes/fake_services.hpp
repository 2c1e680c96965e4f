// An in-process ServiceManager: units are two words the test sets (unit file state and
// active state), every call is recorded, and enable/disable/restart change the words as
// systemctl would.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "common/services.hpp"

namespace instanced::testing {

class FakeServiceManager final : public ServiceManager {
 public:
  struct Unit {
    std::string file_state = "enabled";
    std::string active = "active";
  };

  boost::asio::awaitable<Result<std::string>> unit_file_state(std::string unit) override {
    calls.push_back("is-enabled " + unit);
    if (failing) co_return Error{*failing};
    co_return units[unit].file_state;
  }
  boost::asio::awaitable<Result<std::string>> active_state(std::string unit) override {
    calls.push_back("is-active " + unit);
    if (failing) co_return Error{*failing};
    co_return units[unit].active;
  }
  boost::asio::awaitable<Result<void>> enable_now(std::string unit) override {
    calls.push_back("enable --now " + unit);
    if (failing) co_return Error{*failing};
    units[unit] = {"enabled", "active"};
    co_return Result<void>{};
  }
  boost::asio::awaitable<Result<void>> disable_now(std::string unit) override {
    calls.push_back("disable --now " + unit);
    if (failing) co_return Error{*failing};
    units[unit] = {"disabled", "inactive"};
    co_return Result<void>{};
  }
  boost::asio::awaitable<Result<void>> restart(std::string unit) override {
    calls.push_back("restart " + unit);
    if (failing) co_return Error{*failing};
    units[unit].active = "active";
    co_return Result<void>{};
  }
  boost::asio::awaitable<Result<std::string>> system_state() override {
    calls.push_back("is-system-running");
    co_return system;
  }

  // How many recorded calls start with `prefix`.
  std::size_t count(const std::string& prefix) const {
    std::size_t n = 0;
    for (const auto& c : calls) n += c.starts_with(prefix);
    return n;
  }

  std::map<std::string, Unit> units;
  std::vector<std::string> calls;
  std::optional<std::string> failing;  // every unit call fails with this
  std::string system = "running";
};

}  // namespace instanced::testing
