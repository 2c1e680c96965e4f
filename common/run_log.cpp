#include "common/run_log.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.hpp"
#include "common/sanitizers.hpp"
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

// The shared tail's header: a sequence lock (odd while the writer changes the stream) and
// where the stream stands. The ring follows at kSharedHeader bytes.
constexpr std::uint64_t kSharedMagic = 0x31474f4c4e555249;  // "IRUNLOG1"
constexpr std::size_t kSharedHeader = 64;
struct SharedHeader {
  std::atomic<std::uint64_t> magic;
  std::atomic<std::uint64_t> seq;
  std::atomic<std::uint64_t> produced;
  std::atomic<std::uint64_t> head;
  std::atomic<std::uint64_t> ring_start;
  std::atomic<std::uint64_t> ring_size;
  std::atomic<std::uint64_t> ring_cap;
};
static_assert(sizeof(SharedHeader) <= kSharedHeader);
static_assert(std::atomic<std::uint64_t>::is_always_lock_free, "the header is shared between processes");

// The sequence lock's fences (the ring's bytes are plain stores between them, as in the
// kernel's seqlock). GCC refuses thread fences under ThreadSanitizer, which does not model
// them; there the compiler-only fence stands in, which is all a release or acquire fence
// compiles to on x86 (TSan builds are x86 test builds, and the writer and the follower are
// different processes, which TSan never sees together).
void seq_fence(std::memory_order order) {
#ifdef INSTANCED_TSAN
  std::atomic_signal_fence(order);
#else
  std::atomic_thread_fence(order);
#endif
}

// A running log: `head` bytes in the file, then the last `ring_size` produced bytes in a
// ring of `ring_cap` bytes starting at `ring_start`.
struct Stream {
  std::uint64_t produced = 0;
  std::uint64_t head = 0;
  const char* ring = nullptr;
  std::size_t ring_cap = 0;
  std::size_t ring_start = 0;
  std::size_t ring_size = 0;
};

LogChunk read_running(const std::filesystem::path& file, const Stream& v, std::uint64_t from, std::size_t max) {
  LogChunk c;
  if (from < v.head) {
    const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(max, v.head - from));
    if (Fd fd(::open(file.c_str(), O_RDONLY | O_CLOEXEC)); fd) c.data = pread_string(fd.get(), from, want);
    c.next = from + c.data.size();
    return c;
  }
  const std::uint64_t ring_from = v.produced - v.ring_size;
  if (from < ring_from) {
    c.skipped = ring_from - from;
    from = ring_from;
  }
  const auto start = static_cast<std::size_t>(std::min<std::uint64_t>(from - ring_from, v.ring_size));
  const std::size_t n = std::min<std::size_t>(max, v.ring_size - start);
  c.data.resize(n);
  for (std::size_t i = 0; i < n; ++i) c.data[i] = v.ring[(v.ring_start + start + i) % v.ring_cap];
  c.next = std::min(v.produced, from + n);
  return c;
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

RunLog::RunLog(std::filesystem::path file, std::uint64_t max_bytes, std::size_t tail_lines, LineSink to_journal,
               std::filesystem::path shared_tail)
    : file_(std::move(file)),
      head_cap_(max_bytes / 2),
      tail_cap_(max_bytes - max_bytes / 2),
      journal_budget_(max_bytes),
      tail_lines_(tail_lines),
      to_journal_(std::move(to_journal)),
      shared_path_(std::move(shared_tail)) {
  fd_ = Fd(::open(file_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!fd_) error_ = fmt::format("cannot create {}: {}", file_.string(), std::strerror(errno));
  if (!shared_path_.empty()) map_shared_tail();
}

RunLog::~RunLog() {
  if (shared_map_) ::munmap(shared_map_, shared_len_);
}

// The ring in a file mapped shared (sparse until written). When that fails the ring is in
// memory: the run goes on, only followers see nothing past the head until it ends.
void RunLog::map_shared_tail() {
  const std::size_t len = kSharedHeader + static_cast<std::size_t>(tail_cap_);
  Fd fd(::open(shared_path_.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600));
  void* map = MAP_FAILED;
  if (fd && ::ftruncate(fd.get(), static_cast<off_t>(len)) == 0)
    map = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, MAP_SHARED, fd.get(), 0);
  // No read-ahead: a page's first touch would read (zero-fill) up to megabytes of the
  // sparse file around it, and the unlink at the end drop them all again (measured: a fifth
  // of a short run's CPU went there).
  if (map != MAP_FAILED) ::madvise(map, len, MADV_RANDOM);
  if (map == MAP_FAILED) {
    if (!error_) error_ = fmt::format("cannot map {}: {}", shared_path_.string(), std::strerror(errno));
    std::error_code ec;
    std::filesystem::remove(shared_path_, ec);
    shared_path_.clear();
    return;
  }
  shared_map_ = map;
  shared_len_ = len;
  auto* h = new (map) SharedHeader{};
  h->ring_cap.store(tail_cap_, std::memory_order_relaxed);
  h->magic.store(kSharedMagic, std::memory_order_release);
  ring_data_ = static_cast<char*>(map) + kSharedHeader;
  ring_cap_ = static_cast<std::size_t>(tail_cap_);
}

void RunLog::publish() {
  if (!shared_map_) return;
  auto* h = static_cast<SharedHeader*>(shared_map_);
  std::uint64_t seq = h->seq.load(std::memory_order_relaxed);
  if (seq % 2 == 0) {  // odd while changing (feed() may have begun the change)
    h->seq.store(++seq, std::memory_order_relaxed);
    seq_fence(std::memory_order_release);
  }
  h->produced.store(produced_, std::memory_order_relaxed);
  h->head.store(head_written_, std::memory_order_relaxed);
  h->ring_start.store(ring_start_, std::memory_order_relaxed);
  h->ring_size.store(ring_size_, std::memory_order_relaxed);
  h->seq.store(seq + 1, std::memory_order_release);
}

std::string RunLog::ring_copy() const {
  std::string tail(ring_size_, '\0');
  for (std::size_t i = 0; i < ring_size_; ++i) tail[i] = ring()[(ring_start_ + i) % ring_cap_];
  return tail;
}

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
  if (!bytes.empty() && !ring_data_) {
    ring_.resize(static_cast<std::size_t>(tail_cap_));
    ring_data_ = ring_.data();
    ring_cap_ = ring_.size();
  }
  if (!bytes.empty() && shared_map_) {  // a follower must not read the ring while it changes
    auto* h = static_cast<SharedHeader*>(shared_map_);
    h->seq.store(h->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    seq_fence(std::memory_order_release);
  }
  if (!bytes.empty()) {
    // After the head: the ring keeps the last tail_cap_ bytes.
    std::string_view keep = bytes.size() > ring_cap_ ? bytes.substr(bytes.size() - ring_cap_) : bytes;
    while (!keep.empty()) {
      std::size_t end = (ring_start_ + ring_size_) % ring_cap_;
      std::size_t n = std::min(keep.size(), ring_cap_ - end);
      std::memcpy(ring() + end, keep.data(), n);
      keep.remove_prefix(n);
      std::size_t overflow = ring_size_ + n > ring_cap_ ? ring_size_ + n - ring_cap_ : 0;
      ring_size_ += n - overflow;
      ring_start_ = (ring_start_ + overflow) % ring_cap_;
    }
  }
  publish();
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
    std::string tail = ring_copy();
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
    write_file(ring_copy());
    l.tail = ring_size_;
  }
  fd_.reset();
  if (in_file_ < l.head + l.marker + l.tail) {
    // A write failed: only the head that reached the file is readable.
    l.head = std::min<std::uint64_t>(l.head, in_file_);
    l.marker = 0;
    l.tail = 0;
  }
  if (shared_map_) {
    ::munmap(shared_map_, shared_len_);
    shared_map_ = nullptr;
    std::error_code ec;
    std::filesystem::remove(shared_path_, ec);
  }
  ring_.clear();
  ring_.shrink_to_fit();
  ring_data_ = nullptr;
  ring_size_ = 0;
  partial_.clear();
  lines_.clear();
  finished_ = l;
  return l;
}

LogChunk RunLog::read(std::uint64_t from, std::size_t max) const {
  if (finished_) return read_finished_log(file_, *finished_, from, max);
  return read_running(file_, {produced_, head_written_, ring(), ring_cap_, ring_start_, ring_size_}, from, max);
}

std::optional<LogChunk> read_live_log(const std::filesystem::path& file, const std::filesystem::path& shared_tail,
                                      std::uint64_t from, std::size_t max) {
  Fd fd(::open(shared_tail.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  struct stat st {};
  if (!fd || ::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode) || st.st_size < static_cast<off_t>(kSharedHeader))
    return std::nullopt;
  const auto len = static_cast<std::size_t>(st.st_size);
  void* map = ::mmap(nullptr, len, PROT_READ, MAP_SHARED, fd.get(), 0);
  if (map == MAP_FAILED) return std::nullopt;
  const auto* h = static_cast<const SharedHeader*>(map);
  std::optional<LogChunk> out;
  for (int attempt = 0; attempt < 100 && !out && h->magic.load(std::memory_order_acquire) == kSharedMagic; ++attempt) {
    const std::uint64_t seq = h->seq.load(std::memory_order_acquire);
    if (seq % 2 != 0) {
      ::sched_yield();
      continue;
    }
    Stream v{h->produced.load(std::memory_order_relaxed), h->head.load(std::memory_order_relaxed),
             static_cast<const char*>(map) + kSharedHeader, static_cast<std::size_t>(h->ring_cap.load(std::memory_order_relaxed)),
             static_cast<std::size_t>(h->ring_start.load(std::memory_order_relaxed)),
             static_cast<std::size_t>(h->ring_size.load(std::memory_order_relaxed))};
    if (v.ring_cap > len - kSharedHeader || v.ring_size > v.ring_cap || (v.ring_cap && v.ring_start >= v.ring_cap) ||
        v.ring_size > v.produced || v.head > v.produced)
      break;  // not a header this code wrote
    LogChunk c = read_running(file, v, from, max);
    seq_fence(std::memory_order_acquire);
    if (h->seq.load(std::memory_order_relaxed) == seq) out = std::move(c);
  }
  ::munmap(map, len);
  return out;
}

}  // namespace instanced
