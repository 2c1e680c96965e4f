#include "agent/control/outbox.hpp"

#include <boost/crc.hpp>
#include <boost/json/parse.hpp>
#include <boost/json/serialize.hpp>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fs.hpp"

namespace instanced::control {
namespace {

// Record: u32 payload length, u32 CRC-32 of (kind, seq, payload), u8 kind, u64 seq, payload.
constexpr std::size_t kHeader = 4 + 4 + 1 + 8;

void put_le(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t get_le(const unsigned char* p, int bytes) {
  std::uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}
std::uint32_t crc_of(Outbox::Kind kind, std::uint64_t seq, std::string_view payload) {
  boost::crc_32_type crc;
  unsigned char k = static_cast<unsigned char>(kind);
  crc.process_byte(k);
  std::string s;
  put_le(s, seq, 8);
  crc.process_bytes(s.data(), s.size());
  crc.process_bytes(payload.data(), payload.size());
  return crc.checksum();
}
std::string record(const Outbox::Entry& e) {
  std::string r;
  put_le(r, e.payload.size(), 4);
  put_le(r, crc_of(e.kind, e.seq, e.payload), 4);
  r.push_back(static_cast<char>(e.kind));
  put_le(r, e.seq, 8);
  r += e.payload;
  return r;
}
Error errno_error(std::string_view what, const std::filesystem::path& p) {
  return Error{fmt::format("outbox: {} {}: {}", what, p.string(), std::strerror(errno))};
}
}  // namespace

Outbox::Outbox(std::filesystem::path dir, std::uint64_t max_bytes, std::uint64_t max_held_bytes)
    : dir_(std::move(dir)), max_bytes_(max_bytes), max_held_bytes_(max_held_bytes) {}

Outbox::~Outbox() = default;

Result<void> Outbox::open() {
  RealFilesystem fs;
  if (auto r = fs.create_directories(dir_, 0700); !r) return r;
  // meta: {"acked":N,"next":M}, written atomically.
  if (auto meta = fs.read_file(dir_ / "meta.json", 4096)) {
    boost::system::error_code ec;
    auto v = boost::json::parse(*meta, ec);
    if (!ec && v.is_object()) {
      if (auto* a = v.as_object().if_contains("acked"); a && a->is_int64()) acked_ = static_cast<std::uint64_t>(a->as_int64());
      if (auto* n = v.as_object().if_contains("next"); n && n->is_int64()) next_seq_ = static_cast<std::uint64_t>(n->as_int64());
    }
  }
  auto log = dir_ / "outbox.log";
  auto data = fs.read_file(log, 1ULL << 40);
  std::uint64_t good = 0;
  if (data) {
    const auto* p = reinterpret_cast<const unsigned char*>(data->data());
    std::size_t off = 0;
    while (off + kHeader <= data->size()) {
      std::uint64_t len = get_le(p + off, 4);
      std::uint32_t crc = static_cast<std::uint32_t>(get_le(p + off + 4, 4));
      auto kind = static_cast<Kind>(p[off + 8]);
      std::uint64_t seq = get_le(p + off + 9, 8);
      if (off + kHeader + len > data->size()) break;  // torn: the tail of an interrupted append
      std::string payload = data->substr(off + kHeader, len);
      if (crc != crc_of(kind, seq, payload) || (kind != Kind::event && kind != Kind::result)) break;
      off += kHeader + len;
      good = off;
      next_seq_ = std::max(next_seq_, seq + 1);
      if (seq > acked_) {
        pending_bytes_ += payload.size();
        pending_.push_back({seq, kind, std::move(payload)});
      }
    }
    if (good < data->size()) torn_ = 1;
  }
  log_bytes_ = good;  // what a failed write truncates back to
  Fd fd(::open(log.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return errno_error("open", log);
  // Cut a torn tail so the next append starts on a record boundary.
  if (::ftruncate(fd.get(), static_cast<off_t>(good)) != 0) return errno_error("truncate", log);
  log_bytes_ = good;
  return {};
}

Result<void> Outbox::save_meta() {
  RealFilesystem fs;
  boost::json::object o;
  o["acked"] = acked_;
  o["next"] = next_seq_;
  auto r = fs.write_file_atomic(dir_ / "meta.json", boost::json::serialize(o), 0600);
  meta_dirty_ = !r;
  return r;
}

std::size_t Outbox::held() const {
  std::size_t n = 0;
  for (auto it = pending_.rbegin(); it != pending_.rend() && !it->durable; ++it) ++n;
  return n;
}

std::uint64_t Outbox::held_bytes() const {
  std::uint64_t n = 0;
  for (auto it = pending_.rbegin(); it != pending_.rend() && !it->durable; ++it) n += it->payload.size();
  return n;
}

// The held messages are always the newest: once one is held, every later one is held too,
// so that the log stays in sequence order.
Result<void> Outbox::write_held() {
  auto first = pending_.end();
  while (first != pending_.begin() && !std::prev(first)->durable) --first;
  if (first == pending_.end()) return {};
  std::string records;
  for (auto it = first; it != pending_.end(); ++it) records += record(*it);
  // Opened per write: events and results are rare, and an idle agent holds no descriptor.
  auto log = dir_ / "outbox.log";
  Fd fd(::open(log.c_str(), O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600));
  if (!fd) return errno_error("open", log);
  if (!write_all(fd.get(), records) || ::fdatasync(fd.get()) != 0) {
    int err = errno;
    // Leave no partial record behind for the next write.
    (void)::ftruncate(fd.get(), static_cast<off_t>(log_bytes_));
    errno = err;
    return errno_error("append to", log);
  }
  log_bytes_ += records.size();
  for (auto it = first; it != pending_.end(); ++it) it->durable = true;
  return {};
}

void Outbox::bound_held() {
  std::uint64_t held = held_bytes();
  if (held <= max_held_bytes_) return;
  auto it = pending_.end();
  while (it != pending_.begin() && !std::prev(it)->durable) --it;
  while (held > max_held_bytes_ && it != pending_.end()) {
    if (it->kind == Kind::event) {
      held -= it->payload.size();
      pending_bytes_ -= it->payload.size();
      it = pending_.erase(it);
      ++held_dropped_;
    } else {
      ++it;
    }
  }
}

Result<void> Outbox::append(Kind kind, std::string payload) {
  pending_bytes_ += payload.size();
  pending_.push_back(Entry{next_seq_++, kind, std::move(payload), false});
  auto written = write_held();
  if (!written) {
    bound_held();
    return written;
  }
  if (meta_dirty_) (void)save_meta();
  // Over the bound: drop the oldest events (never results), then compact the log so a
  // restart does not bring them back.
  bool dropped_any = false;
  for (auto it = pending_.begin(); pending_bytes_ > max_bytes_ && it != pending_.end();) {
    if (it->kind == Kind::event) {
      pending_bytes_ -= it->payload.size();
      it = pending_.erase(it);
      ++dropped_;
      dropped_any = true;
    } else {
      ++it;
    }
  }
  if (dropped_any) return rewrite();
  return {};
}

Result<void> Outbox::retry() {
  if (auto r = write_held(); !r) return r;
  if (meta_dirty_) return save_meta();
  return {};
}

Result<void> Outbox::ack(std::uint64_t seq) {
  if (seq <= acked_) return {};
  acked_ = std::min(seq, next_seq_ - 1);
  while (!pending_.empty() && pending_.front().seq <= acked_) {
    pending_bytes_ -= pending_.front().payload.size();
    pending_.pop_front();
  }
  if (auto r = save_meta(); !r) return r;
  // Compact once the acknowledged part dominates the log.
  if (held() == 0 && log_bytes_ > (1 << 20) && log_bytes_ > 4 * (pending_bytes_ + 1)) return rewrite();
  return {};
}

Result<void> Outbox::rewrite() {
  std::string all;
  for (const auto& e : pending_) all += record(e);
  RealFilesystem fs;
  if (auto r = save_meta(); !r) return r;
  if (auto r = fs.write_file_atomic(dir_ / "outbox.log", all, 0600); !r) return r;
  log_bytes_ = all.size();
  for (auto& e : pending_) e.durable = true;
  return {};
}

}  // namespace instanced::control
