// The workload monitor (instanced-run, docs/monitor.md): one small process per workload,
// started by the agent on a run folder (workload.hpp). It starts the workload in its own
// session, holds its output and writes the capped run log (RunLog, with the tail shared
// for the agent to follow), enforces the timeout and the kill grace, stops what the
// workload left behind, and records the end in exit.json before it exits. It needs
// nothing from the agent while it runs: the agent may stop, crash or be replaced.
//
// SIGTERM or SIGINT to the monitor (or the file `cancel` in the folder, looked at once at
// its start) cancels the workload: SIGTERM to its process group, SIGKILL after the grace.
#pragma once

#include <filesystem>

namespace instanced::monitor {

// Runs the workload of `run_dir` to its end. 0 once exit.json is written (whatever the
// workload's outcome); 1 when even that failed (the agent then reports the workload lost).
int run(const std::filesystem::path& run_dir);

// A spare monitor (SpareMonitor, client.hpp): waits for one line on fd 3, its run folder
// (an absolute path), then runs it as run() does. The end of fd 3 without a line (the
// agent stopped) ends it with 0, nothing done; so does SIGTERM or SIGINT while it waits
// (their default action). From the moment a line can be read they are blocked, so that a
// cancel sent just after the hand-over waits for the workload's handler.
int run_spare();

}  // namespace instanced::monitor
