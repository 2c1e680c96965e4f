// The crash-safe outbox of the control channel. Events and command results are appended
// to a log file in state_dir (length + CRC-32 + the encoded message, fdatasync'd before
// append() returns) and stay there until the control plane acknowledges their sequence
// number. After a crash the log is read back up to the first torn record, so `kill -9`
// at any moment loses nothing that append() had returned for.
//
// Bounded: when the unacknowledged messages exceed max_bytes, the oldest events are
// dropped (and counted); command results are never dropped.
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
  };

  Outbox(std::filesystem::path dir, std::uint64_t max_bytes);
  ~Outbox();
  Outbox(const Outbox&) = delete;
  Outbox& operator=(const Outbox&) = delete;

  // Reads what a previous run left; creates the directory. Call once before anything else.
  Result<void> open();
  // The next sequence number, to be put into the message before encoding it.
  std::uint64_t next_seq() const { return next_seq_; }
  // Appends an encoded message carrying next_seq(); durable when it returns ok.
  Result<void> append(Kind kind, std::string payload);
  // Everything up to `seq` was received by the control plane.
  Result<void> ack(std::uint64_t seq);

  const std::deque<Entry>& pending() const { return pending_; }
  std::uint64_t acked() const { return acked_; }
  std::uint64_t pending_bytes() const { return pending_bytes_; }
  std::uint64_t dropped() const { return dropped_; }
  std::uint64_t torn_records_dropped() const { return torn_; }

 private:
  Result<void> rewrite();  // compacts the log to the pending entries
  Result<void> save_meta();

  std::filesystem::path dir_;
  std::uint64_t max_bytes_;
  std::deque<Entry> pending_;
  std::uint64_t pending_bytes_ = 0;
  std::uint64_t log_bytes_ = 0;
  std::uint64_t acked_ = 0;
  std::uint64_t next_seq_ = 1;
  std::uint64_t dropped_ = 0;
  std::uint64_t torn_ = 0;
};

}  // namespace instanced::control
