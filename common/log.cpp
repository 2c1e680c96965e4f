#include "common/log.hpp"

#include <cstdlib>
#include <mutex>
#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <sys/stat.h>
#include <syslog.h>

#include "common/systemd.hpp"

namespace instanced {
namespace {

thread_local const LogFields* current_fields = nullptr;

bool has_field(const std::vector<std::pair<std::string_view, std::string_view>>& fields, std::string_view name) {
  for (const auto& [n, v] : fields)
    if (n == name) return true;
  return false;
}

// spdlog's own systemd sink (1.10) cannot attach the logger's name as a journal field,
// so this one does: `journalctl -u instanced INSTANCED_SUBSYSTEM=status` filters by it.
class JournaldSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  explicit JournaldSink(std::string socket_path) : journal_(std::move(socket_path)) {}

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    int priority = LOG_INFO;
    switch (msg.level) {
      case spdlog::level::trace:
      case spdlog::level::debug: priority = LOG_DEBUG; break;
      case spdlog::level::info: priority = LOG_INFO; break;
      case spdlog::level::warn: priority = LOG_WARNING; break;
      case spdlog::level::err: priority = LOG_ERR; break;
      case spdlog::level::critical: priority = LOG_CRIT; break;
      default: break;
    }
    // A datagram holds the whole entry; a log line is capped well below its limit.
    std::string_view message(msg.payload.data(), std::min<std::size_t>(msg.payload.size(), 48 * 1024));
    const char prio[2] = {static_cast<char>('0' + priority), '\0'};
    std::vector<std::pair<std::string_view, std::string_view>> fields{{"MESSAGE", message}, {"PRIORITY", prio}};
    LogFields::append_current(fields);  // MESSAGE_ID, the entity, a workload's identifier
    if (!has_field(fields, "SYSLOG_IDENTIFIER")) fields.emplace_back("SYSLOG_IDENTIFIER", "instanced");
    fields.emplace_back("INSTANCED_SUBSYSTEM", std::string_view(msg.logger_name.data(), msg.logger_name.size()));
    journal_.send(fields);
  }
  void flush_() override {}

 private:
  systemd::JournalSocket journal_;
};

}  // namespace

LogFields::LogFields(std::initializer_list<LogField> fields) : fields_(fields), outer_(current_fields) {
  current_fields = this;
}

LogFields::~LogFields() { current_fields = outer_; }

void LogFields::append_current(std::vector<std::pair<std::string_view, std::string_view>>& out) {
  std::vector<const LogFields*> chain;
  for (const LogFields* f = current_fields; f; f = f->outer_) chain.push_back(f);
  for (auto it = chain.rbegin(); it != chain.rend(); ++it)
    for (const auto& field : (*it)->fields_) out.emplace_back(field.name, field.value);
}

bool RateLimit::take(time_point now) {
  if (last_) tokens_ = std::min(burst_, tokens_ + rate_ * std::chrono::duration<double>(now - *last_).count());
  last_ = now;
  if (tokens_ < 1) return false;
  tokens_ -= 1;
  return true;
}

std::string_view to_string(LogLevel level) {
  return EnumNames<LogLevel>::names[static_cast<std::size_t>(level)];
}

spdlog::level::level_enum to_spdlog(LogLevel level) {
  switch (level) {
    case LogLevel::trace: return spdlog::level::trace;
    case LogLevel::debug: return spdlog::level::debug;
    case LogLevel::info: return spdlog::level::info;
    case LogLevel::warn: return spdlog::level::warn;
    case LogLevel::error: return spdlog::level::err;
  }
  return spdlog::level::info;
}

bool Logging::under_systemd() {
  // systemd's documented check: JOURNAL_STREAM names the device:inode of our stderr.
  if (const char* js = std::getenv("JOURNAL_STREAM")) {
    struct stat st{};
    if (fstat(2, &st) == 0) {
      unsigned long long dev = 0, ino = 0;
      if (std::sscanf(js, "%llu:%llu", &dev, &ino) == 2 && dev == st.st_dev && ino == st.st_ino)
        return true;
    }
  }
  return std::getenv("INVOCATION_ID") != nullptr && std::getenv("JOURNAL_STREAM") != nullptr;
}

Logging::Logging(LogTarget target, LogLevel level, std::string journal_socket) : level_(level) {
  journald_ = target == LogTarget::journald || (target == LogTarget::automatic && under_systemd());
  if (journald_) {
    sinks_.push_back(std::make_shared<JournaldSink>(journal_socket));
  } else {
    auto sink = std::make_shared<spdlog::sinks::stderr_sink_mt>();
    sink->set_formatter(std::make_unique<spdlog::pattern_formatter>("%Y-%m-%dT%H:%M:%S.%eZ %-5l %n: %v",
                                                                    spdlog::pattern_time_type::utc));
    sinks_.push_back(sink);
  }
}

Logger Logging::get(const std::string& subsystem) {
  for (auto& l : loggers_)
    if (l->name() == subsystem) return l;
  auto logger = std::make_shared<spdlog::logger>(subsystem, sinks_.begin(), sinks_.end());
  logger->set_level(to_spdlog(level_));
  logger->flush_on(spdlog::level::warn);
  loggers_.push_back(logger);
  return logger;
}

void Logging::workload_line(const Logger& logger, spdlog::level::level_enum level, std::string_view identifier,
                            LogField entity, std::string_view line) {
  if (!logger->should_log(level)) return;
  if (!journald_) {
    logger->log(level, "[{}] {}", entity.value, line);
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  if (!workload_rate_.take(now)) {
    ++workload_dropped_;
    return;
  }
  if (workload_dropped_ > 0 && (!dropped_reported_ || now - *dropped_reported_ >= std::chrono::seconds(10))) {
    dropped_reported_ = now;
    logger->warn("{} lines of workload output were not sent to the journal (over {}/s); the run logs have them",
                 workload_dropped_, kWorkloadLinesPerSecond);
    workload_dropped_ = 0;
  }
  LogFields fields{{"SYSLOG_IDENTIFIER", identifier}, entity};
  logger->log(level, "{}", line);
}

void Logging::set_level(LogLevel level) {
  level_ = level;
  for (auto& l : loggers_) l->set_level(to_spdlog(level));
}

}  // namespace instanced
