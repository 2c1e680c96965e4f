// Protocol v1 of the control channel (docs/protocol.md): JSON text frames, one message per
// frame, in an envelope {"v":1,"type":…,"id":…,"seq":…,"ts":…,"body":{…}}. Shared by the
// agent and the development control plane. Decoding enforces a size and a nesting limit
// before anything else looks at the message.
#pragma once

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>
#include <cstdint>
#include <optional>
#include <string>

#include "common/result.hpp"

namespace instanced::control {

inline constexpr int kProtocolVersion = 1;
inline constexpr const char* kSubprotocol = "instanced.v1";

struct Limits {
  std::size_t max_bytes = 1 << 20;
  unsigned max_depth = 32;
};

struct Message {
  std::string type;  // hello, heartbeat, event, result (agent); command, ack (control plane)
  std::string id;    // unique per message
  std::optional<std::uint64_t> seq;  // events and results: the outbox sequence number
  std::string ts;    // RFC 3339 UTC
  boost::json::object body;
};

std::string encode(const Message& m);
// An error names what is wrong ("body.name: missing", "message of 2000000 bytes exceeds 1048576").
// On an error, `partial` (if given) gets the type and the id where they were valid (1 to
// 256 characters), so that a broken command can still be answered by its id.
Result<Message> decode(std::string_view text, const Limits& limits, Message* partial = nullptr);

// Commands as the control plane sends them: body {name, args, deadline?}.
struct Command {
  std::string id;
  std::string name;
  boost::json::object args;
  std::optional<std::string> deadline;  // RFC 3339; not started after it
};
Result<Command> command_of(const Message& m);

// Result statuses, as sent in result bodies.
enum class Status { ok, failed, refused, invalid, unsupported, expired, interrupted };
std::string_view to_string(Status s);

struct CommandResult {
  Status status = Status::ok;
  boost::json::object result;  // command-specific output
  std::string error;           // for everything but ok
};

// A short random id ("a1b2c3…", 16 hex digits) for messages.
std::string new_id();

}  // namespace instanced::control
