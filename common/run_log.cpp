#include "common/run_log.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <unistd.h>

#include "common/fs.hpp"
#include "common/text.hpp"

namespace instanced {
namespace json = boost::json;

json::object LogLayout::to_json() const {
  return {{"produced", produced}, {"head", head}, {"marker", marker}, {"tail", tail}};
}

LogLayout LogLayout::from_json(const json::object& o) {
  auto get = [&](const char* k) -> std::uint64_t {
    auto* v = o.if_contains(k);
    if (!v) return 0;
    if (v->is_uint64()) return v->as_uint64();
    if (v->is_int64() && v->as_int64() >= 0) return static_cast<std::uint64_t>(v->as_int64());
    return 0;
  };
  return {get("produced"), get("head"), get("marker"), get("tail")};
}

namespace {

std::string pread_string(int fd, std::uint64_t offset, std::size_t n) {
  std::string out(n, '\0');
  std::size_t got = 0;
  while (got < n) {
    ssize_t r = ::pread(fd, out.data() + got, n - got, static_cast<off_t>(offset + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  out.resize(got);
  return out;
}

}  // namespace

LogChunk read_finished_log(const std::filesystem::path& file, const LogLayout& l, std::uint64_t from, std::size_t max) {
  LogChunk c;
  Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd) {
    c.next = from;
    return c;
  }
  const std::uint64_t tail_start = l.produced - l.tail;  // produced offset of the first tail byte
  if (from < l.head) {
    c.data = pread_string(fd.get(), from, static_cast<std::size_t>(std::min<std::uint64_t>(max, l.head - from)));
    c.next = from + c.data.size();
  } else if (from < l.produced) {
    if (from < tail_start) {
      c.skipped = tail_start - from;
      from = tail_start;
    }
    std::uint64_t at = l.head + l.marker + (from - tail_start);
    c.data = pread_string(fd.get(), at, static_cast<std::size_t>(std::min<std::uint64_t>(max, l.produced - from)));
    c.next = from + c.data.size();
  } else {
    c.next = l.produced;
  }
  return c;
}

RunLog::RunLog(std::filesystem::path file, std::uint64_t max_bytes, std::size_t tail_lines, LineSink to_journal)
    : file_(std::move(file)),
      head_cap_(max_bytes / 2),
      tail_cap_(max_bytes - max_bytes / 2),
      journal_budget_(max_bytes),
      tail_lines_(tail_lines),
      to_journal_(std::move(to_journal)) {
  fd_ = Fd(::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd_) error_ = fmt::format("cannot create {}: {}", file_.string(), std::strerror(errno));
}

RunLog::~RunLog() = default;

void RunLog::write_file(std::string_view bytes) {
  while (fd_ && !bytes.empty()) {
    ssize_t n = ::write(fd_.get(), bytes.data(), bytes.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      // ENOSPC and friends: the file stays as far as it got, nothing more is written to
      // it (the layout then says so), and the run goes on.
      if (!error_) error_ = fmt::format("writing {}: {}", file_.string(), std::strerror(errno));
      fd_.reset();
      return;
    }
    in_file_ += static_cast<std::uint64_t>(n);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
}

void RunLog::feed(std::string_view bytes) {
  if (finished_) return;
  produced_ += bytes.size();
  std::string_view all = bytes;
  // The head goes to the file as it comes, so a reader can follow it.
  if (head_written_ < head_cap_) {
    auto n = static_cast<std::size_t>(std::min<std::uint64_t>(bytes.size(), head_cap_ - head_written_));
    write_file(bytes.substr(0, n));
    head_written_ += n;
    bytes.remove_prefix(n);
  }
  if (!bytes.empty()) {
    // After the head: the ring keeps the last tail_cap_ bytes.
    if (ring_.empty()) ring_.resize(static_cast<std::size_t>(tail_cap_));
    std::string_view keep = bytes.size() > ring_.size() ? bytes.substr(bytes.size() - ring_.size()) : bytes;
    while (!keep.empty()) {
      std::size_t end = (ring_start_ + ring_size_) % ring_.size();
      std::size_t n = std::min(keep.size(), ring_.size() - end);
      std::memcpy(ring_.data() + end, keep.data(), n);
      keep.remove_prefix(n);
      std::size_t overflow = ring_size_ + n > ring_.size() ? ring_size_ + n - ring_.size() : 0;
      ring_size_ += n - overflow;
      ring_start_ = (ring_start_ + overflow) % ring_.size();
    }
  }
  // Lines for the journal, until its budget is spent; after that the last lines come from
  // the ring.
  while (!journal_cut_ && !all.empty()) {
    const void* nl = std::memchr(all.data(), '\n', all.size());
    std::size_t len = nl ? static_cast<std::size_t>(static_cast<const char*>(nl) - all.data()) : all.size();
    std::size_t take = std::min(len, kMaxLine - partial_.size());
    partial_.append(all.substr(0, take));
    all.remove_prefix(take);
    if (partial_.size() >= kMaxLine || (nl && take == len)) {
      line(partial_);
      partial_.clear();
      if (nl && take == len) all.remove_prefix(1);
    }
  }
}

void RunLog::line(std::string_view raw) {
  if (to_journal_ && !journal_cut_) {
    if (journal_budget_ >= raw.size() + 1) {
      journal_budget_ -= raw.size() + 1;
      to_journal_(escape_for_log(raw));
    } else {
      journal_cut_ = true;
      to_journal_(fmt::format("[instanced: further output is not sent to the journal; it is in {}]", file_.string()));
    }
  }
  if (tail_lines_ == 0 || ring_size_ > 0) return;  // past the head, the ring has the last lines
  lines_.emplace_back(raw.substr(0, kMaxTailLine + 1));  // one more byte: "was cut" is known
  while (lines_.size() > tail_lines_) lines_.pop_front();
}

std::vector<std::string> RunLog::last_lines() const {
  if (finished_) return last_;
  std::vector<std::string> out;
  auto add = [&](std::string_view raw) {
    std::string e = escape_for_log(raw.substr(0, kMaxTailLine));
    if (raw.size() > kMaxTailLine) e += "…";
    out.push_back(std::move(e));
  };
  if (ring_size_ == 0) {
    for (const auto& l : lines_) add(l);
    if (!partial_.empty()) add(partial_);
  } else {
    std::string tail(ring_size_, '\0');
    for (std::size_t i = 0; i < ring_size_; ++i) tail[i] = ring_[(ring_start_ + i) % ring_.size()];
    std::string_view t = tail;
    if (!t.empty() && t.back() == '\n') t.remove_suffix(1);
    std::vector<std::string_view> lines;
    while (lines.size() <= tail_lines_) {
      auto p = t.rfind('\n');
      if (p == std::string_view::npos) {
        lines.push_back(t);  // the ring starts inside a line: a fragment
        break;
      }
      lines.push_back(t.substr(p + 1));
      t = t.substr(0, p);
    }
    std::reverse(lines.begin(), lines.end());
    for (auto l : lines) add(l);
  }
  while (out.size() > tail_lines_) out.erase(out.begin());
  return out;
}

LogLayout RunLog::finish() {
  if (finished_) return *finished_;
  if (!partial_.empty() && !journal_cut_) line(partial_);
  partial_.clear();
  last_ = last_lines();
  LogLayout l;
  l.produced = produced_;
  l.head = head_written_;
  if (ring_size_ > 0) {
    std::uint64_t cut = produced_ - head_written_ - ring_size_;
    if (cut > 0) {
      std::string marker = fmt::format(
          "\n[instanced: {} bytes of output cut here; the log keeps the first {} and the last {} bytes]\n", cut,
          head_written_, ring_size_);
      write_file(marker);
      l.marker = marker.size();
    }
    std::string tail(ring_size_, '\0');
    for (std::size_t i = 0; i < ring_size_; ++i) tail[i] = ring_[(ring_start_ + i) % ring_.size()];
    write_file(tail);
    l.tail = ring_size_;
  }
  fd_.reset();
  if (in_file_ < l.head + l.marker + l.tail) {
    // A write failed: only the head that reached the file is readable.
    l.head = std::min<std::uint64_t>(l.head, in_file_);
    l.marker = 0;
    l.tail = 0;
  }
  ring_.clear();
  ring_.shrink_to_fit();
  ring_size_ = 0;
  partial_.clear();
  lines_.clear();
  finished_ = l;
  return l;
}

LogChunk RunLog::read(std::uint64_t from, std::size_t max) const {
  if (finished_) return read_finished_log(file_, *finished_, from, max);
  LogChunk c;
  if (from < head_written_) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(max, head_written_ - from));
    if (Fd fd(::open(file_.c_str(), O_RDONLY | O_CLOEXEC)); fd) c.data = pread_string(fd.get(), from, want);
    c.next = from + c.data.size();
    return c;
  }
  const std::uint64_t ring_from = produced_ - ring_size_;
  if (from < ring_from) {
    c.skipped = ring_from - from;
    from = ring_from;
  }
  std::size_t start = static_cast<std::size_t>(from - ring_from);
  std::size_t n = std::min<std::size_t>(max, ring_size_ - std::min(ring_size_, start));
  c.data.resize(n);
  for (std::size_t i = 0; i < n; ++i) c.data[i] = ring_[(ring_start_ + start + i) % ring_.size()];
  c.next = std::min(produced_, from + n);
  return c;
}

}  // namespace instanced
