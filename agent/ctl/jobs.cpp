// instancectl: the job queue: jobs; job submit, show, logs, cancel.
#include "agent/ctl/client.hpp"

namespace instanced::ctl {
namespace {

int cmd_job_logs(const Args& a, const std::string& id) { return follow_log(a, "/v1/jobs/log?id=" + id); }

std::string checked_job_id(const std::string& id) {
  if (id.empty() || id.size() > 64) usage_error(fmt::format("'{}' is not a job id", id));
  for (char c : id)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-'))
      usage_error(fmt::format("'{}' is not a job id", id));
  return id;
}

// "NAME=VALUE" into o[NAME].
void put_pair(json::object& o, const std::string& flag, const std::string& text) {
  auto eq = text.find('=');
  if (eq == std::string::npos || eq == 0) usage_error(fmt::format("{} wants NAME=VALUE, not '{}'", flag, text));
  o[text.substr(0, eq)] = text.substr(eq + 1);
}

int cmd_job_submit(const Args& a, const std::vector<std::string>& args) {
  json::object job, env, labels;
  json::array command;
  std::size_t i = 0;
  auto value = [&](const std::string& flag) -> std::string {
    if (i + 1 >= args.size()) usage_error(flag + " needs a value");
    return args[++i];
  };
  for (; i < args.size(); ++i) {
    const std::string& arg = args[i];
    if (arg == "--") {
      ++i;
      break;
    }
    if (arg == "--id") job["id"] = value(arg);
    else if (arg == "--image") job["image"] = value(arg);
    else if (arg == "--image-archive") job["image_archive"] = value(arg);
    else if (arg == "--workdir") job["workdir"] = value(arg);
    else if (arg == "--user") job["user"] = value(arg);
    else if (arg == "--timeout") job["timeout"] = value(arg);
    else if (arg == "--gpus") {
      std::string g = value(arg);
      if (g == "all") {
        job["gpus"] = "all";
      } else {
        char* end = nullptr;
        long n = std::strtol(g.c_str(), &end, 10);
        if (g.empty() || *end) usage_error(fmt::format("--gpus wants a count or 'all', not '{}'", g));
        job["gpus"] = n;
      }
    } else if (arg == "--cpu-weight") {
      std::string w = value(arg);
      char* end = nullptr;
      long n = std::strtol(w.c_str(), &end, 10);
      if (w.empty() || *end) usage_error(fmt::format("--cpu-weight wants a number, not '{}'", w));
      job["cpu_weight"] = n;
    } else if (arg == "--env") put_pair(env, arg, value(arg));
    else if (arg == "--label") put_pair(labels, arg, value(arg));
    else if (arg.starts_with("-")) usage_error(fmt::format("job submit: unknown option '{}' (the command goes after --)", arg));
    else break;
  }
  for (; i < args.size(); ++i) command.emplace_back(args[i]);
  if (command.empty()) usage_error("job submit: a command is needed (instancectl job submit [OPTIONS] -- COMMAND [ARG...])");
  job["command"] = std::move(command);
  if (!env.empty()) job["env"] = std::move(env);
  if (!labels.empty()) job["labels"] = std::move(labels);
  auto reply = request(a.socket, http::verb::post, "/v1/jobs", json::serialize(job));
  if (reply.status != 202 && reply.status != 200) agent_refused(reply);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto v = parse_json(reply.body);
  std::string id = str(v, "id");
  if (reply.status == 200)
    std::cout << "job " << id << " was already submitted: " << str(v, "state") << "\n";
  else if (str(v, "state") == "queued")
    std::cout << "job " << id << " queued at position " << str(v, "position") << "; follow it with: instancectl job logs " << id
              << " --follow\n";
  else
    std::cout << "job " << id << " started; follow it with: instancectl job logs " << id << " --follow\n";
  return kHealthy;
}

}  // namespace

// "jobs": running, queued (position, waiting), the last finished.
int cmd_jobs(const Args& a, const Style& st) {
  auto reply = request(a.socket, http::verb::get, "/v1/jobs");
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  if (a.json) {
    std::cout << reply.body;
    return kHealthy;
  }
  auto cmdline = [](const json::value& j) {
    std::string out;
    if (auto* img = j.as_object().if_contains("image")) out = "[" + json::value_to<std::string>(*img) + "] ";
    for (const auto& c : j.at("command").as_array()) out += json::value_to<std::string>(c) + " ";
    if (!out.empty()) out.pop_back();
    if (out.size() > 48) out = out.substr(0, 45) + "...";
    return out;
  };
  std::cout << "jobs: " << str(v, "running_count") << " of " << str(v, "slots") << " slots in use, " << str(v, "queued_count")
            << " queued" << (v.at("accepting").as_bool() ? "" : " (not accepting: preparing to stop)") << "\n";
  if (auto* e = v.as_object().if_contains("error")) std::cout << st.state("failed") << ": " << json::value_to<std::string>(*e) << "\n";
  const auto& running = v.at("running").as_array();
  const auto& queued = v.at("queued").as_array();
  if (!running.empty() || !queued.empty()) {
    std::cout << "\n" << pad("ID", 22, 2) << pad("STATE", 11, 5) << pad("GPUS", 6, 4) << pad("SINCE", 26, 5) << "COMMAND\n";
    for (const auto& j : running) {
      std::string id = str(j, "id"), state = str(j, "state"), gpus;
      for (const auto& g : j.at("assigned_gpus").as_array()) gpus += (gpus.empty() ? "" : ",") + json::serialize(g);
      if (gpus.empty()) gpus = "-";
      std::string since = field_or_dash(j, "started");
      std::cout << pad(id, 22, id.size()) << pad(state, 11, state.size()) << pad(gpus, 6, gpus.size()) << pad(since, 26, since.size())
                << cmdline(j) << "\n";
    }
    for (const auto& j : queued) {
      std::string id = str(j, "id"), state = "#" + str(j, "position"), gpus = field_or_dash(j, "gpus");
      std::string since = str(j, "submitted");
      std::cout << pad(id, 22, id.size()) << pad(state, 11, state.size()) << pad(gpus, 6, gpus.size()) << pad(since, 26, since.size())
                << cmdline(j) << "\n";
      if (j.as_object().contains("waiting")) std::cout << "    " << str(j, "waiting") << "\n";
    }
    if (queued.size() < v.at("queued_count").to_number<std::size_t>())
      std::cout << "  ... and " << v.at("queued_count").to_number<std::size_t>() - queued.size() << " more queued\n";
  }
  const auto& finished = v.at("finished").as_array();
  if (!finished.empty()) {
    std::cout << "\n" << pad("FINISHED", 22, 8) << pad("STATE", 11, 5) << pad("EXIT", 6, 4) << pad("ENDED", 26, 5) << "REASON\n";
    for (const auto& j : finished) {
      std::string id = str(j, "id"), state = str(j, "state"), exit = field_or_dash(j, "exit_code"), ended = field_or_dash(j, "ended");
      std::string shown = state == "succeeded" ? "ok" : state;
      std::cout << pad(id, 22, id.size()) << pad(st.state(shown), 11, shown.size()) << pad(exit, 6, exit.size())
                << pad(ended, 26, ended.size()) << str(j, "reason") << "\n";
    }
  }
  return kHealthy;
}




int cmd_job(const Args& a) {
  const std::vector<std::string>& ops = a.operands;
  const char* usage = "usage: instancectl job submit [OPTIONS] -- COMMAND [ARG...] | show ID | logs ID [--follow] | cancel ID";
  if (ops.empty()) usage_error(usage);
  if (ops[0] == "submit") return cmd_job_submit(a, std::vector<std::string>(ops.begin() + 1, ops.end()));
  if (ops.size() != 2) usage_error(usage);
  const std::string id = checked_job_id(ops[1]);
  if (ops[0] == "logs") return cmd_job_logs(a, id);
  if (ops[0] == "cancel") {
    auto reply = request(a.socket, http::verb::post, "/v1/jobs/cancel?id=" + id);
    if (reply.status != 200) agent_refused(reply);
    auto v = parse_json(reply.body);
    std::cout << (str(v, "state") == "cancelled" ? "job " + id + " cancelled\n" : "job " + id + ": cancel requested; it is being stopped\n");
    return kHealthy;
  }
  if (ops[0] != "show") usage_error(usage);
  auto reply = request(a.socket, http::verb::get, "/v1/jobs/job?id=" + id);
  if (reply.status != 200) agent_refused(reply);
  auto v = parse_json(reply.body);
  std::string state = str(v, "state");
  int rc = state == "failed" || state == "timed_out" || state == "lost" ? kDegraded : kHealthy;
  if (a.json) {
    std::cout << reply.body;
    return rc;
  }
  for (const auto& [k, val] : v.as_object())
    std::cout << pad(std::string(k), 18, k.size()) << (val.is_string() ? std::string(val.as_string()) : json::serialize(val)) << "\n";
  return rc;
}

}  // namespace instanced::ctl
