#include "agent/idle/activity.hpp"

#include <cerrno>
#include <cstring>
#include <fmt/format.h>
#include <fstream>
#include <signal.h>
#include <sstream>
#include <sys/stat.h>
#include <utmpx.h>

#include "common/fs.hpp"

namespace instanced::idle {

namespace {
constexpr std::size_t kMaxUtmpBytes = 16 << 20;  // about 40,000 login records
}  // namespace

void IdleTracker::observe(const Sample& s) {
  reasons_.clear();
  for (const auto& session : s.sessions) reasons_.push_back("session: " + session);
  if (s.jobs > 0) reasons_.push_back(fmt::format("jobs: {} queued or running", s.jobs));
  if (s.setup_running) reasons_.push_back("a setup script runs");
  if (s.cpu_percent && *s.cpu_percent > t_.cpu_percent)
    reasons_.push_back(fmt::format("CPU at {:.0f}% (over {:.0f}%)", *s.cpu_percent, t_.cpu_percent));
  if (s.gpu_percent && *s.gpu_percent > t_.gpu_percent)
    reasons_.push_back(fmt::format("GPU at {:.0f}% (over {:.0f}%)", *s.gpu_percent, t_.gpu_percent));
  if (s.jupyter) {
    if (s.jupyter->busy > 0) reasons_.push_back(fmt::format("Jupyter: {} kernels busy", s.jupyter->busy));
    // A kernel or terminal used while we were not looking: activity then.
    if (s.jupyter->last && *s.jupyter->last > last_active_) last_active_ = std::min(*s.jupyter->last, s.at);
  }
  if (!reasons_.empty()) last_active_ = s.at;
}

std::optional<Clock::wall_time> IdleTracker::idle_since() const {
  if (!reasons_.empty()) return std::nullopt;
  return last_active_;
}

bool IdleTracker::idle(Clock::wall_time now) const { return reasons_.empty() && now - last_active_ >= t_.after; }

std::vector<std::string> IdleTracker::not_idle_reasons(Clock::wall_time now) const {
  if (!reasons_.empty()) return reasons_;
  if (idle(now)) return {};
  auto quiet = std::chrono::duration_cast<Duration>(now - last_active_);
  return {fmt::format("quiet for {} of the {} that make it idle (last activity {})", format_duration(quiet),
                      format_duration(t_.after), iso8601(last_active_))};
}

std::optional<double> cpu_percent(const CpuTimes& before, const CpuTimes& after) {
  if (after.total <= before.total || after.busy < before.busy) return std::nullopt;
  return 100.0 * static_cast<double>(after.busy - before.busy) / static_cast<double>(after.total - before.total);
}

Result<std::vector<std::string>> RealHostActivity::sessions(const std::string& utmp) {
  // Read as records, not through getutxent(): that keeps process-wide state. Through one
  // descriptor that must be a regular file of sane size (a FIFO or /dev/zero put in its
  // place cannot stall or swell the agent).
  struct stat st {};
  if (::lstat(utmp.c_str(), &st) != 0 && errno == ENOENT) return std::vector<std::string>{};  // no logins since boot
  auto data = read_regular_file(utmp, kMaxUtmpBytes);
  if (!data) return data.error();
  std::vector<std::string> out;
  utmpx u{};
  for (std::size_t at = 0; at + sizeof u <= data->size(); at += sizeof u) {
    std::memcpy(&u, data->data() + at, sizeof u);
    if (u.ut_type != USER_PROCESS) continue;
    // A record left behind by a session that ended without logging out.
    if (u.ut_pid > 0 && kill(u.ut_pid, 0) != 0 && errno == ESRCH) continue;
    auto field = [](const char* p, std::size_t n) { return std::string(p, strnlen(p, n)); };
    std::string user = field(u.ut_user, sizeof u.ut_user), line = field(u.ut_line, sizeof u.ut_line),
                host = field(u.ut_host, sizeof u.ut_host);
    out.push_back(host.empty() ? fmt::format("{} {}", user, line) : fmt::format("{} {} from {}", user, line, host));
  }
  return out;
}

Result<CpuTimes> RealHostActivity::cpu_times() {
  std::ifstream in("/proc/stat");
  std::string line;
  if (!in || !std::getline(in, line) || !line.starts_with("cpu "))
    return Error{"/proc/stat: no 'cpu' line"};
  std::istringstream ss(line.substr(4));
  std::uint64_t v[8] = {};
  for (auto& x : v) ss >> x;
  // user nice system idle iowait irq softirq steal: idle and iowait are not busy.
  CpuTimes t;
  for (int i = 0; i < 8; ++i) t.total += v[i];
  t.busy = t.total - v[3] - v[4];
  return t;
}

}  // namespace instanced::idle
