// instanced-run: the monitor of one workload (agent/monitor/monitor.hpp, docs/monitor.md).
// The agent starts it; it is not meant to be run by hand.
#include <cstdio>
#include <cstring>

#include "agent/monitor/monitor.hpp"
#include "agent/monitor/workload.hpp"
#include "common/build_info.hpp"

int main(int argc, char** argv) {
  if (argc == 2 && std::strcmp(argv[1], "--version") == 0) {
    std::printf("instanced-run %s\n%s\n", instanced::build_version(), instanced::build_toolchain().c_str());
    return 0;
  }
  if (argc == 2 && instanced::monitor::kSpareArgument == argv[1]) return instanced::monitor::run_spare();
  if (argc != 2 || argv[1][0] != '/') {
    std::fprintf(stderr, "usage: instanced-run RUN_FOLDER (an absolute path; the agent starts this program)\n");
    return 2;
  }
  return instanced::monitor::run(argv[1]);
}
