#include "agent/jobs/journal.hpp"

#include <boost/crc.hpp>
#include <charconv>
#include <fmt/format.h>

namespace instanced::jobs {

namespace {

constexpr std::size_t kMaxFile = std::size_t{1} << 30;  // 100,000 queued records are about 60 MiB
constexpr std::size_t kCompactAbove = 1 << 20;

std::uint32_t crc32(std::string_view text) {
  boost::crc_32_type crc;
  crc.process_bytes(text.data(), text.size());
  return crc.checksum();
}

std::string framed(std::string_view body) { return fmt::format("{:08x} {}\n", crc32(body), body); }

struct Line {
  char kind = 0;  // 'R' or 'F'
  std::string_view text;
};

// One line without its newline: its kind and text, or why it cannot be read.
Result<Line> parse_line(std::string_view line) {
  if (line.size() < 11 || line[8] != ' ' || line[10] != ' ') return Error{"not a journal line"};
  std::uint32_t want = 0;
  auto [end, ec] = std::from_chars(line.data(), line.data() + 8, want, 16);
  if (ec != std::errc() || end != line.data() + 8) return Error{"not a journal line"};
  const std::string_view body = line.substr(9);
  if (crc32(body) != want) return Error{"checksum mismatch"};
  if (body[0] != 'R' && body[0] != 'F') return Error{fmt::format("unknown kind '{}'", body[0])};
  return Line{body[0], body.substr(2)};
}

}  // namespace

std::string JobJournal::record_line(const JobRecord& job) { return framed("R " + job.to_text()); }
std::string JobJournal::forget_line(const std::string& id) { return framed("F " + id); }

Result<JobJournal::Loaded> JobJournal::load() {
  auto text = fs_.read_file(file_, kMaxFile);
  if (!text) {
    if (text.error().kind == ErrorKind::not_found) return Loaded{};
    return text.error();
  }
  std::map<std::string, JobRecord> last;
  Loaded out;
  std::string_view rest = *text;
  for (std::size_t number = 1; !rest.empty(); ++number) {
    const auto nl = rest.find('\n');
    if (nl == std::string_view::npos) {  // cut short by a crash while it was written
      out.problems.push_back(fmt::format("line {}: incomplete (the last write did not finish); ignored", number));
      break;
    }
    const std::string_view raw = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
    auto line = parse_line(raw);
    if (line && line->kind == 'F') {
      last.erase(std::string(line->text));
      continue;
    }
    auto rec = line ? JobRecord::parse(line->text) : Result<JobRecord>(line.error());
    if (!rec) {
      out.problems.push_back(fmt::format("line {}: {}", number, rec.error().message));
      continue;
    }
    std::string id = rec->spec.id;
    last.insert_or_assign(std::move(id), std::move(*rec));
  }
  file_bytes_ = text->size();
  for (auto& [id, rec] : last) {
    const std::size_t size = record_line(rec).size();
    live_[id] = size;
    live_bytes_ += size;
    out.records.push_back(std::move(rec));
  }
  return out;
}

Result<void> JobJournal::write(std::string line, const std::string& id) {
  if (auto r = fs_.append_file(file_, line, 0600, false); !r) return r;
  if (compacting_) kept_ += line;
  ++written_;
  file_bytes_ += line.size();
  if (auto it = live_.find(id); it != live_.end()) live_bytes_ -= it->second;
  return {};
}

Result<void> JobJournal::append(const JobRecord& job) {
  std::string line = record_line(job);
  const std::size_t size = line.size();
  if (auto r = write(std::move(line), job.spec.id); !r) return r;
  live_[job.spec.id] = size;
  live_bytes_ += size;
  return {};
}

Result<void> JobJournal::forget(const std::string& id) {
  if (auto r = write(forget_line(id), id); !r) return r;
  live_.erase(id);
  return {};
}

// The folder too after a compaction's rename, until a sync has reached past it.
std::function<Result<void>()> JobJournal::syncer() const {
  return [&fs = fs_, file = file_, folder = renamed_ > synced_]() -> Result<void> {
    if (auto r = fs.append_file(file, "", 0600, true); !r) return r;
    if (folder) return fs.sync_path(file.parent_path());
    return {};
  };
}

Result<void> JobJournal::commit() {
  if (!pending()) return {};
  const std::uint64_t upto = written_;
  if (auto r = syncer()(); !r) return r;
  synced(upto);
  return {};
}

bool JobJournal::wants_compaction() const {
  return !compacting_ && file_bytes_ > kCompactAbove && file_bytes_ > 2 * live_bytes_ && file_bytes_ > retry_above_;
}

std::string JobJournal::snapshot(const std::vector<const JobRecord*>& live) {
  std::string text;
  text.reserve(live_bytes_);
  std::map<std::string, std::size_t> sizes;
  for (const JobRecord* job : live) {
    std::string line = record_line(*job);
    sizes[job->spec.id] = line.size();
    text += line;
  }
  live_ = std::move(sizes);
  live_bytes_ = text.size();
  return text;
}

Result<void> JobJournal::compact(const std::vector<const JobRecord*>& live) {
  std::string text = snapshot(live);
  if (auto r = fs_.write_file_atomic(file_, text, 0600); !r) return r;
  file_bytes_ = text.size();
  synced_ = ++written_;  // the file as rewritten is durable: it holds every live record
  return {};
}

std::string JobJournal::begin_compaction(const std::vector<const JobRecord*>& live) {
  std::string text = snapshot(live);
  compacted_bytes_ = text.size();
  kept_.clear();
  compacting_ = true;
  return text;
}

Result<void> JobJournal::finish_compaction() {
  compacting_ = false;
  const std::string kept = std::move(kept_);
  kept_.clear();
  if (!kept.empty())
    if (auto r = fs_.append_file(replacement(), kept, 0600, false); !r) return r;
  if (auto r = fs_.rename(replacement(), file_); !r) return r;
  file_bytes_ = compacted_bytes_ + kept.size();
  renamed_ = ++written_;
  return {};
}

// Not tried again before the file has grown by another kCompactAbove (a full disk is not
// written to the end at every change).
void JobJournal::abandon_compaction() {
  compacting_ = false;
  kept_.clear();
  retry_above_ = file_bytes_ + kCompactAbove;
}

}  // namespace instanced::jobs
