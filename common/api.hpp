// The bundle of OS abstractions passed by reference to every subsystem (after Envoy's
// Api): the product wires the real ones in agent/main.cpp, tests wire fakes.
#pragma once

#include "common/blocking_pool.hpp"
#include "common/clock.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/notifier.hpp"
#include "common/state.hpp"

namespace instanced {

struct Api {
  Clock& clock;
  Filesystem& fs;
  Notifier& notifier;
  BlockingPool& pool;
  StateRegistry& state;
  Logging& logging;
};

}  // namespace instanced
