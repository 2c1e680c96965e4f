#include "agent/apps/config.hpp"

#include <fmt/format.h>

#include "common/url.hpp"

namespace instanced {

std::optional<std::string> AppConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  if (url.empty() && process.empty() && unit.empty())
    return fmt::format("app '{}': set at least one of 'url', 'process' and 'unit' to look at", name);
  // Applications are probed on this machine only: a probe is not a way to reach elsewhere.
  auto local = [&](const std::string& key, const std::string& value, bool ws) -> std::optional<std::string> {
    if (value.empty()) return std::nullopt;
    auto u = parse_url(value);
    if (!u) return fmt::format("{}: {}", key, u.error().message);
    if (u->tls || (ws ? u->scheme != "ws" : u->scheme != "http"))
      return fmt::format("{}: '{}' must be a {}:// URL (applications are probed on this machine)", key, value,
                         ws ? "ws" : "http");
    if (u->host != "127.0.0.1" && u->host != "localhost" && u->host != "::1")
      return fmt::format("{}: '{}' must name 127.0.0.1, ::1 or localhost", key, value);
    // URLs are shown in /v1/apps and in messages: a secret has no place in them.
    if (auto q = u->target.find('?'); q != std::string::npos && u->target.find("token=", q) != std::string::npos)
      return fmt::format("{}: a token in the URL would be shown in status and logs; use token_file", key);
    return std::nullopt;
  };
  if (auto e = local("url", url, false)) return e;
  if (auto e = local("websocket", websocket, true)) return e;
  if (jupyter && url.empty()) return fmt::format("app '{}': jupyter needs 'url' (the server's /api/status)", name);
  if (restart && unit.empty()) return fmt::format("app '{}': restart needs 'unit' (restarts go through systemd)", name);
  return std::nullopt;
}

std::optional<std::string> AppsConfig::validate() const {
  if (slow > timeout)
    return fmt::format("slow: {} is longer than timeout ({})", format_duration(slow), format_duration(timeout));
  return check::first_repeat(apps, [](const AppConfig& a) { return a.name; }, "apps");
}

}  // namespace instanced
