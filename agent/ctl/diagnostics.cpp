// instancectl diagnostics: the agent makes a bundle; it is fetched into a file, or uploaded
// by the agent to a pre-signed URL read from a file (never from the command line: it
// holds a SAS). Progress goes to stderr.
#include <fcntl.h>
#include <fstream>
#include <sys/stat.h>

#include "agent/ctl/client.hpp"

namespace instanced::ctl {
namespace {

struct DiagnosticsArgs {
  std::string output;    // -o FILE
  std::string url_file;  // --upload-url-file FILE ("-": stdin)
};

DiagnosticsArgs parse_diagnostics_args(const std::vector<std::string>& ops) {
  DiagnosticsArgs d;
  for (std::size_t i = 0; i < ops.size(); ++i) {
    const bool has_value = i + 1 < ops.size();
    if ((ops[i] == "-o" || ops[i] == "--output") && has_value) d.output = ops[++i];
    else if (ops[i] == "--upload-url-file" && has_value) d.url_file = ops[++i];
    else usage_error(fmt::format("diagnostics: unexpected argument '{}'", ops[i]));
  }
  return d;
}

// The URL: the first line of the file (or of stdin), blanks trimmed.
std::string read_upload_url(const std::string& file) {
  std::string line;
  if (file == "-") {
    std::getline(std::cin, line);
  } else {
    std::ifstream in(file);
    if (!in) throw Failure(kUsage, fmt::format("--upload-url-file {}: cannot read it", file));
    std::getline(in, line);
  }
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
  while (!line.empty() && std::isspace(static_cast<unsigned char>(line.front()))) line.erase(0, 1);
  if (line.empty()) throw Failure(kUsage, fmt::format("--upload-url-file {}: no URL in it", file));
  return line;
}

bool ended(const std::string& state) { return state == "ready" || state == "uploaded" || state == "failed"; }

// "collecting: journal (8/8)", "uploading: 40% of 12.1 MiB (attempt 2 of …)".
std::string progress_line(const json::value& s) {
  std::string state = str(s, "state");
  if (state == "collecting" && num(s, "steps") > 0)
    return fmt::format("collecting: {} ({}/{})", str(s, "step"), num(s, "steps_done") + 1, num(s, "steps"));
  if (state == "uploading") {
    const auto& u = s.at("upload");
    const double total = num(u, "total");
    const int tenth = total > 0 ? static_cast<int>(num(u, "sent") * 10 / total) : 0;
    return fmt::format("uploading to {}: {}% of {} (attempt {})", str(u, "url"), tenth * 10, human(total),
                       num(u, "attempts"));
  }
  return state;
}

// Polls until the bundle `id` is made; its last state.
json::value wait_for(const Args& a, const std::string& id) {
  std::string shown;
  for (;;) {
    auto reply = request(a.socket, http::verb::get, "/v1/diagnostics");
    if (reply.status != 200) agent_refused(reply);
    json::value s = parse_json(reply.body);
    if (str(s, "id") != id) throw Failure(kFailed, fmt::format("bundle {} was replaced by {}", id, str(s, "id")));
    std::string line = progress_line(s);
    if (line != shown && !a.json) std::cerr << line << "\n";
    shown = line;
    if (ended(str(s, "state"))) return s;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
}

// The kept bundle into `file` (mode 0600), through FILE.part (made new: never a file or
// link that was there) renamed when whole; FILE.part is removed on failure.
void fetch(const Args& a, const std::string& id, const std::string& file) {
  const std::string part = file + ".part";
  ::unlink(part.c_str());
  int fd = ::open(part.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
  if (fd < 0) throw Failure(kFailed, fmt::format("{}: {}", part, std::strerror(errno)));
  auto fail = [&](const std::string& why) {
    ::close(fd);
    ::unlink(part.c_str());
    throw Failure(kFailed, why);
  };
  std::uint64_t from = 0, size = 1;
  while (from < size) {
    Reply reply;
    try {
      reply = request(a.socket, http::verb::get, fmt::format("/v1/diagnostics/bundle?from={}", from));
      if (reply.status != 200) agent_refused(reply);
    } catch (const Failure& f) {
      fail(f.what());
    }
    if (reply.headers["X-Instanced-Id"] != id) fail(fmt::format("bundle {} is no longer kept", id));
    size = std::stoull(reply.headers["X-Instanced-Size"]);
    const std::uint64_t next = std::stoull(reply.headers["X-Instanced-Next"]);
    if (::write(fd, reply.body.data(), reply.body.size()) != static_cast<ssize_t>(reply.body.size()))
      fail(fmt::format("{}: {}", part, std::strerror(errno)));
    if (next <= from && from < size) fail("the agent's bundle ended early");
    from = next;
  }
  if (::fsync(fd) != 0) fail(fmt::format("{}: {}", part, std::strerror(errno)));
  ::close(fd);
  if (::rename(part.c_str(), file.c_str()) != 0) throw Failure(kFailed, fmt::format("{}: {}", file, std::strerror(errno)));
}

}  // namespace

int cmd_diagnostics(const Args& a) {
  const DiagnosticsArgs d = parse_diagnostics_args(a.operands);
  std::string body;
  if (!d.url_file.empty()) body = json::serialize(json::object{{"upload_url", read_upload_url(d.url_file)}});
  auto started = request(a.socket, http::verb::post, "/v1/diagnostics", body);
  if (started.status != 202) agent_refused(started);
  const std::string id = str(parse_json(started.body), "id");
  json::value s = wait_for(a, id);
  const std::string state = str(s, "state");
  const bool available = s.as_object().contains("available") && s.at("available").as_bool();
  std::string file = d.output;
  if (file.empty() && d.url_file.empty()) file = fmt::format("instanced-diagnostics-{}.tar.gz", id);
  if (!file.empty() && available) fetch(a, id, file);
  if (a.json) {
    std::cout << json::serialize(s) << "\n";
  } else if (available) {
    std::cout << fmt::format("bundle {}: {}, sha256 {}", id, human(num(s, "bytes")), str(s, "sha256"));
    if (!file.empty()) std::cout << fmt::format(", written to {}", file);
    if (state == "uploaded") std::cout << fmt::format(", uploaded to {}", str(s.at("upload"), "url"));
    std::cout << "\n";
    for (const auto& p : s.at("problems").as_array()) std::cout << "  not complete: " << std::string_view(p.as_string()) << "\n";
  }
  if (state == "failed") throw Failure(kFailed, str(s, "error"));
  return kHealthy;
}

}  // namespace instanced::ctl
