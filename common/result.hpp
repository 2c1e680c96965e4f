// Results for likely failures (docs/error-policy.md): a value or an Error with a message
// that names what went wrong and where. No exceptions cross module boundaries for these.
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace instanced {

// What kind of failure, for the caller that must answer differently (HTTP 400 or 404 or 409,
// a command's `invalid` or `failed`): never found out from the message's words.
enum class ErrorKind {
  failed,     // the operation could not be done (the default)
  invalid,    // the request or input is wrong: the caller's to fix
  not_found,  // what was named does not exist
};

struct Error {
  std::string message;
  ErrorKind kind = ErrorKind::failed;
};

template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}
  Result(Error error) : v_(std::move(error)) {}

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { assert(ok()); return std::get<0>(v_); }
  const T& value() const& { assert(ok()); return std::get<0>(v_); }
  T&& value() && { assert(ok()); return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { assert(!ok()); return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// Result<void>: success or an Error.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}
  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { assert(!ok_); return error_; }

 private:
  Error error_;
  bool ok_ = true;
};

}  // namespace instanced
