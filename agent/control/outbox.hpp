// The crash-safe outbox of the control channel. Events and command results are appended
// to a log file in state_dir (length + CRC-32 + the encoded message, fdatasync'd before
// append() returns) and stay there until the control plane acknowledges their sequence
// number. After a crash the log is read back up to the first torn record, so `kill -9`
// at any moment loses nothing that append() had returned for.
//
// Bounded: when the unacknowledged messages exceed max_bytes, the oldest events are
// dropped (and counted); command results are never dropped.
//
// A log that cannot be written (ENOSPC, EIO, a read-only state folder) loses nothing
// either: the message is kept in memory only ("held"), sent like the others, and written
// by the next append() or retry() that succeeds, in order. Held messages are bounded by
// max_held_bytes: over it the oldest held events are dropped (counted apart); results
// are never dropped. Only a crash while messages are held loses them.
#pragma once

#include <cstdint>
#include <deque>
#include <filesystem>
#include <string>

#include "common/result.hpp"

namespace instanced::control {

class Outbox {
 public:
  enum class Kind : std::uint8_t { event = 1, result = 2 };
  struct Entry {
    std::uint64_t seq = 0;
    Kind kind = Kind::event;
    std::string payload;  // the encoded message, with its seq
    bool durable = true;  // in the log on disk; false: held in memory until it can be written
  };

  Outbox(std::filesystem::path dir, std::uint64_t max_bytes, std::uint64_t max_held_bytes = 4 << 20);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Reads what a previous run left; creates the directory. Call once before anything else.
  Result<void> open();
  // The next sequence number, to be put into the message before encoding it.
  std::uint64_t next_seq() const { return next_seq_; }
  // Appends an encoded message carrying next_seq(). Ok: durable. An error says why it could
  // not be written; the message is then held in memory (see above), not lost.
  Result<void> append(Kind kind, std::string payload);
  // Writes the held messages, in order. Ok when none is held any more.
  Result<void> retry();
  // Everything up to `seq` was received by the control plane. An error says that the
  // acknowledgement could not be recorded on disk (it is in memory, and written later).
  Result<void> ack(std::uint64_t seq);

  const std::deque<Entry>& pending() const { return pending_; }
  std::uint64_t acked() const { return acked_; }
  std::uint64_t pending_bytes() const { return pending_bytes_; }
  std::uint64_t dropped() const { return dropped_; }
  std::uint64_t torn_records_dropped() const { return torn_; }
  // Messages held in memory only, their bytes, and the held events dropped over the bound.
  std::size_t held() const;
  std::uint64_t held_bytes() const;
  std::uint64_t held_dropped() const { return held_dropped_; }

 private:
  Result<void> rewrite();  // compacts the log to the pending entries
  Result<void> save_meta();
  Result<void> write_held();  // appends the held suffix of pending_ to the log
  void bound_held();

  std::filesystem::path dir_;
  std::uint64_t max_bytes_;
  std::uint64_t max_held_bytes_;
  std::deque<Entry> pending_;
  std::uint64_t pending_bytes_ = 0;
  std::uint64_t log_bytes_ = 0;
  std::uint64_t acked_ = 0;
  std::uint64_t next_seq_ = 1;
  std::uint64_t dropped_ = 0;
  std::uint64_t torn_ = 0;
  std::uint64_t held_dropped_ = 0;
  bool meta_dirty_ = false;  // an acknowledgement not yet on disk
};

}  // namespace instanced::control
