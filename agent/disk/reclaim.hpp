// Safe reclaim: named rules, each off unless enabled, each able to run as a dry run that
// reports what it would free. File rules walk their roots with openat/unlinkat relative to
// directory descriptors opened with O_NOFOLLOW, never follow a symlink (a symlink is removed
// as itself, its target untouched), never leave the root's file system, and delete only what
// their predicate selects. Command rules (journal, conda, containers) run the tool's own
// CLI through the process runner, when it is installed. Blocking: runs off the event loop.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "agent/disk/config.hpp"
#include "common/process.hpp"

namespace instanced::disk {

struct Deletion {
  std::string path;
  std::uint64_t bytes = 0;  // allocated bytes freed (st_blocks * 512)
};

struct RuleReport {
  std::string rule;
  bool dry_run = false;
  bool ran = false;             // false: not enabled or its tool is missing (see `note`)
  std::uint64_t files = 0;
  std::uint64_t bytes = 0;      // freed, or that would be freed (file rules: exact)
  std::uint64_t errors = 0;
  std::vector<Deletion> deleted;  // every file (or would-be), capped at 10,000 entries
  std::vector<std::string> commands;  // command lines run (or that would run)
  std::string note;
};

// Runs a command to completion and returns (exit status, output). Off the event loop.
using CommandRunner = std::function<Result<std::pair<int, std::string>>(const std::vector<std::string>& argv)>;

struct ReclaimContext {
  std::chrono::system_clock::time_point now;
  std::vector<std::string> home_roots{"/root", "/home"};  // pip caches are under <home>/.cache/pip
  CommandRunner run_command;
  std::function<bool(const std::string&)> executable = nullptr;  // is this program present?
};

const std::vector<std::string>& rule_names();

// Runs `rule` (by name) with its configuration; an unknown name is an error.
Result<RuleReport> run_rule(const std::string& rule, const ReclaimConfig& config, bool dry_run,
                            const ReclaimContext& ctx);

// The file walker used by the file rules, exposed for tests: deletes (or counts) the
// entries under `root` for which `select(path, stat)` holds, depth first; directories
// emptied by it are removed when `remove_empty_dirs`. Never follows symlinks, never leaves
// the root's file system.
struct WalkStats;
void walk_and_delete(const std::string& root, const std::function<bool(const std::string&, const struct stat&)>& select,
                     bool dry_run, bool remove_empty_dirs, RuleReport& report);

}  // namespace instanced::disk
