#include "agent/diagnostics/scrub.hpp"

#include <algorithm>
#include <set>

#include "common/text.hpp"

namespace instanced::diagnostics {
namespace {

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string percent_decoded(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && hex_digit(s[i + 1]) >= 0 && hex_digit(s[i + 2]) >= 0) {
      out.push_back(static_cast<char>(hex_digit(s[i + 1]) * 16 + hex_digit(s[i + 2])));
      i += 2;
    } else {
      out.push_back(s[i]);
    }
  }
  return out;
}

std::string_view trimmed(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

// The value of `sig=` in a query string ("sv=…&sig=…"), or "".
std::string_view signature_of(std::string_view query) {
  while (!query.empty()) {
    auto amp = query.find('&');
    std::string_view pair = query.substr(0, amp);
    if (pair.starts_with("sig=")) return pair.substr(4);
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return {};
}

}  // namespace

std::vector<std::string> secrets_in(std::string_view file_text) {
  std::string_view line = trimmed(file_text.substr(0, file_text.find('\n')));
  std::set<std::string> found;
  auto add = [&](std::string_view v) {
    for (const std::string& s : {std::string(v), percent_encoded(v), percent_decoded(v)})
      if (s.size() >= kMinSecret) found.insert(s);
  };
  add(line);
  // "user:password" (a proxy's credentials): the password alone too.
  if (auto colon = line.find(':'); colon != std::string_view::npos) add(line.substr(colon + 1));
  std::string_view query = line.starts_with("?") ? line.substr(1) : line;
  add(query);
  add(signature_of(query));
  return {found.begin(), found.end()};
}

Scrubber::Scrubber(std::vector<std::string> secrets) {
  for (auto& s : secrets)
    if (s.size() >= kMinSecret) secrets_.push_back(std::move(s));
  std::sort(secrets_.begin(), secrets_.end());
  secrets_.erase(std::unique(secrets_.begin(), secrets_.end()), secrets_.end());
  for (const auto& s : secrets_) hold_ = std::max(hold_, s.size() - 1);
}

std::string Scrubber::feed(std::string_view bytes) {
  pending_.append(bytes);
  return take(pending_.size() > hold_ ? pending_.size() - hold_ : 0);
}

std::string Scrubber::finish() { return take(pending_.size()); }

// Replaces the matches that start before `safe_end` (each is wholly in pending_: no secret
// is longer than hold_ + 1); overlapping matches are one replaced span, so no part of
// either is left. Returns the text up to `safe_end`; a span reaching past it is remembered
// (covered_), so that a match found next time inside it only extends it.
std::string Scrubber::take(std::size_t safe_end) {
  std::vector<std::pair<std::size_t, std::size_t>> matches;  // start, length
  for (const auto& s : secrets_)
    for (auto p = pending_.find(s); p != std::string::npos && p < safe_end; p = pending_.find(s, p + 1))
      matches.emplace_back(p, s.size());
  std::sort(matches.begin(), matches.end());
  std::string out;
  std::size_t cursor = covered_;  // text before it is already replaced
  for (const auto& [start, length] : matches) {
    if (start < cursor) {
      cursor = std::max(cursor, start + length);  // overlaps the span being replaced
      continue;
    }
    out.append(pending_, cursor, start - cursor);
    out += "***";
    cursor = start + length;
    ++replaced_;
  }
  if (cursor < safe_end) out.append(pending_, cursor, safe_end - cursor);
  covered_ = cursor > safe_end ? cursor - safe_end : 0;
  pending_.erase(0, safe_end);
  return out;
}

}  // namespace instanced::diagnostics
