// instancectl: disk: paths, scan, reclaim; reboot.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {
namespace {

void print_scan(const json::value& scan, const Style& st) {
  if (auto* run = scan.as_object().if_contains("progress"))
    std::cout << "\nscan running since " << str(scan, "started") << ": " << str(*run, "files") << " entries, "
              << human(num(*run, "bytes")) << " so far\n";
  auto* last = scan.as_object().if_contains("last");
  if (!last) {
    if (str(scan, "state") == "none") std::cout << "\nno scan yet: instancectl disk scan\n";
    return;
  }
  std::cout << "\n" << st.bold("largest on " + str(*last, "root")) << " (scan of " << str(*last, "finished") << ", "
            << human(num(*last, "bytes")) << " in " << str(*last, "files") << " entries, this file system only)\n";
  for (const char* kind : {"top_dirs", "top_files"}) {
    std::cout << (std::string_view(kind) == "top_dirs" ? "  directories:\n" : "  files:\n");
    for (const auto& e : last->at(kind).as_array()) {
      std::string size = human(num(e, "bytes"));
      std::cout << "    " << pad(size, 11, size.size()) << str(e, "path") << "\n";
    }
  }
}

}  // namespace

int cmd_disk(const Args& a, const Style& st) {
  const std::string sub = a.operands.empty() ? "" : a.operands[0];
  if (sub == "scan") {
    auto reply = request(a.socket, http::verb::post, "/v1/disk/scan");
    if (reply.status != 202) agent_refused(reply);
    std::cout << "scan started; see it with: instancectl disk\n";
    return kHealthy;
  }
  if (sub == "reclaim") {
    std::string rules;
    for (std::size_t i = 1; i < a.operands.size(); ++i) rules += (rules.empty() ? "" : ",") + a.operands[i];
    auto reply = request(a.socket, http::verb::post,
                         fmt::format("/v1/disk/reclaim?dry_run={}&rules={}", a.dry_run ? 1 : 0, rules));
    if (reply.status != 202) agent_refused(reply);
    // Wait for the report.
    for (;;) {
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
      auto v = parse_json(request(a.socket, http::verb::get, "/v1/disk").body);
      const auto& r = v.at("reclaim");
      if (str(r, "state") == "running") continue;
      const auto& last = r.at("last");
      if (a.json) {
        std::cout << json::serialize(last) << "\n";
        return kHealthy;
      }
      bool dry = last.at("dry_run").as_bool();
      for (const auto& rule : last.at("rules").as_array()) {
        std::string name = str(rule, "rule");
        if (!rule.at("ran").as_bool()) {
          std::cout << pad(name, 14, name.size()) << "skipped: " << str(rule, "note") << "\n";
          continue;
        }
        std::cout << pad(name, 14, name.size()) << (dry ? "would free " : "freed ") << human(num(rule, "bytes")) << " in "
                  << str(rule, "files") << " files";
        if (num(rule, "errors") > 0) std::cout << ", " << str(rule, "errors") << " errors";
        if (!str(rule, "note").empty()) std::cout << " (" << str(rule, "note") << ")";
        std::cout << "\n";
        for (const auto& c : rule.at("commands").as_array())
          std::cout << "    " << (dry ? "would run: " : "ran: ") << json::value_to<std::string>(c) << "\n";
      }
      std::cout << (dry ? "dry run: would free " : "freed ") << human(num(last, "bytes"));
      if (!str(last, "report").empty()) std::cout << "; every file is listed in " << str(last, "report");
      std::cout << "\n";
      return kHealthy;
    }
  }
  if (!sub.empty()) usage_error("usage: instancectl disk [scan | reclaim [--dry-run] [RULE...]]");
  auto reply = request(a.socket, http::verb::get, "/v1/disk");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  int rc = kHealthy;
  for (const auto& p : v.at("paths").as_array())
    if (str(p, "state") != "ok" && str(p, "state") != "absent") rc = kDegraded;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  std::cout << pad("PATH", 16, 4) << pad("SIZE", 11, 4) << pad("USED", 11, 4) << pad("FREE", 11, 4)
            << pad("INODES FREE", 13, 11) << "STATE\n";
  for (const auto& p : v.at("paths").as_array()) {
    std::string path = str(p, "path"), state = str(p, "state");
    if (!p.as_object().contains("total_bytes")) {
      std::cout << pad(path, 16, path.size()) << pad("-", 11, 1) << pad("-", 11, 1) << pad("-", 11, 1) << pad("-", 13, 1)
                << st.state(state) << (p.as_object().contains("error") ? " (" + str(p, "error") + ")" : "") << "\n";
      continue;
    }
    std::string size = human(num(p, "total_bytes")), used = human(num(p, "used_bytes")), avail = human(num(p, "avail_bytes"));
    double ti = num(p, "total_inodes");
    std::string inodes = ti > 0 ? fmt::format("{:.0f}%", 100.0 * num(p, "avail_inodes") / ti) : "-";
    std::string shown = state == "ok" ? "ok" : state;
    std::cout << pad(path, 16, path.size()) << pad(size, 11, size.size()) << pad(used, 11, used.size())
              << pad(avail, 11, avail.size()) << pad(inodes, 13, inodes.size()) << st.state(shown) << "\n";
  }
  if (auto* rec = v.as_object().if_contains("recovery"))
    std::cout << "\n" << st.state("failed") << ": " << json::value_to<std::string>(*rec) << "\n";
  print_scan(v.at("scan"), st);
  return rc;
}

int cmd_reboot(const Args& a) {
  auto reply = request(a.socket, http::verb::post, "/v1/reboot");
  if (reply.status == 409) {
    std::cerr << "instancectl: " << str(parse_json(reply.body), "error") << "\n";
    return kDegraded;
  }
  if (reply.status != 202) agent_refused(reply);
  std::cout << "rebooting\n";
  return kHealthy;
}

}  // namespace instanced::ctl
