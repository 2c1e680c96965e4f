// An in-process MountOps: a mount table the test (or a fake mount helper) writes, probes
// that answer what the test says, and a record of syncs and unmounts. Thread-safe: the
// subsystem calls it from the blocking pool and its single-flight threads.
#pragma once

#include <fmt/format.h>
#include <map>
#include <mutex>
#include <vector>

#include "agent/mounts/ops.hpp"

namespace instanced::testing {

class FakeMountOps final : public mounts::MountOps {
 public:
  void add_mount(const std::string& mount_point, const std::string& fstype, const std::string& source) {
    std::lock_guard lock(mu_);
    table_[mount_point] = {fstype, source};
  }
  bool is_mounted(const std::string& mount_point) const {
    std::lock_guard lock(mu_);
    return table_.contains(mount_point);
  }
  void set_probe(mounts::ProbeOutcome outcome) {
    std::lock_guard lock(mu_);
    probe_ = std::move(outcome);
  }
  std::size_t probes() const {
    std::lock_guard lock(mu_);
    return probes_;
  }
  std::vector<std::string> calls() const {
    std::lock_guard lock(mu_);
    return calls_;
  }

  Result<std::string> mountinfo() override {
    std::lock_guard lock(mu_);
    std::string text = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n";
    int id = 40;
    for (const auto& [mp, m] : table_) text += fmt::format("{} 22 0:{} / {} rw - {} {} rw\n", id, id, mp, m.first, m.second), ++id;
    return text;
  }
  mounts::ProbeOutcome probe(const std::string&, bool) override {
    std::lock_guard lock(mu_);
    ++probes_;
    return probe_;
  }
  int sync(const std::string& mount_point) override {
    std::lock_guard lock(mu_);
    calls_.push_back("sync " + mount_point);
    return 0;
  }
  int unmount(const std::string& mount_point, bool lazy) override {
    std::lock_guard lock(mu_);
    calls_.push_back(std::string(lazy ? "umount -l " : "umount ") + mount_point);
    return table_.erase(mount_point) ? 0 : EINVAL;
  }
  int make_directory(const std::string&, unsigned) override { return 0; }
  // Every helper is installed, in /usr/sbin.
  std::string find_program(const std::string& name) override { return "/usr/sbin/" + name; }

 private:
  mutable std::mutex mu_;
  std::map<std::string, std::pair<std::string, std::string>> table_;  // mount point -> fstype, source
  mounts::ProbeOutcome probe_;
  std::size_t probes_ = 0;
  std::vector<std::string> calls_;
};

}  // namespace instanced::testing
