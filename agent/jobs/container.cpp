#include "agent/jobs/container.hpp"

#include <fmt/format.h>
#include <sstream>

namespace instanced::jobs {

std::string container_name(const std::string& job_id) { return "instanced-job-" + job_id; }

std::vector<std::string> run_argv(const ContainerRuntimeCli& cli, const JobSpec& spec, const RunOptions& opt) {
  std::vector<std::string> a{cli.program, "run", "--name", opt.name, "--label", "instanced.job=" + spec.id};
  // Kept after it exits, so that its exit code can be read after an agent restart; the
  // agent removes it once the outcome is recorded.
  if (!opt.env_file.empty()) a.insert(a.end(), {"--env-file", opt.env_file});
  if (!spec.workdir.empty()) a.insert(a.end(), {"--volume", spec.workdir + ":" + spec.workdir, "--workdir", spec.workdir});
  if (opt.user) a.insert(a.end(), {"--user", fmt::format("{}:{}", opt.user->first, opt.user->second)});
  if (spec.cpu_weight != 100) a.insert(a.end(), {"--cpu-shares", std::to_string(spec.cpu_weight * 1024 / 100)});
  if (!opt.gpus.empty()) {
    if (cli.kind == RuntimeKind::podman) {
      // The NVIDIA Container Toolkit's CDI names (nvidia-ctk cdi generate).
      for (unsigned g : opt.gpus) a.insert(a.end(), {"--device", fmt::format("nvidia.com/gpu={}", g)});
    } else {
      std::string list;
      for (unsigned g : opt.gpus) list += (list.empty() ? "" : ",") + std::to_string(g);
      a.insert(a.end(), {"--gpus", "\"device=" + list + "\""});
    }
  }
  a.insert(a.end(), opt.extra.begin(), opt.extra.end());
  a.push_back(spec.image);
  a.insert(a.end(), spec.command.begin(), spec.command.end());
  return a;
}

std::string env_file_text(const JobSpec& spec) {
  std::string out;
  for (const auto& [k, v] : spec.env) out += k + "=" + v + "\n";
  return out;
}

std::vector<std::string> inspect_argv(const ContainerRuntimeCli& cli, const std::string& name) {
  return {cli.program, "inspect", "--type", "container", "--format", "{{.State.Status}} {{.State.ExitCode}}", name};
}
std::vector<std::string> image_exists_argv(const ContainerRuntimeCli& cli, const std::string& image) {
  // `docker image inspect` answers for both; podman's `image exists` is quieter.
  if (cli.kind == RuntimeKind::podman) return {cli.program, "image", "exists", image};
  return {cli.program, "image", "inspect", "--format", "{{.Id}}", image};
}
std::vector<std::string> load_argv(const ContainerRuntimeCli& cli, const std::string& archive) {
  return {cli.program, "load", "--input", archive};
}
std::vector<std::string> kill_argv(const ContainerRuntimeCli& cli, const std::string& name, const char* signal) {
  return {cli.program, "kill", "--signal", signal, name};
}
std::vector<std::string> remove_argv(const ContainerRuntimeCli& cli, const std::string& name) {
  return {cli.program, "rm", "--force", name};
}
std::vector<std::string> logs_argv(const ContainerRuntimeCli& cli, const std::string& name, bool follow) {
  if (follow) return {cli.program, "logs", "--follow", name};
  return {cli.program, "logs", name};
}
std::vector<std::string> wait_argv(const ContainerRuntimeCli& cli, const std::string& name) {
  return {cli.program, "wait", name};
}

std::optional<InspectResult> parse_inspect(const std::string& output) {
  std::istringstream in(output);
  InspectResult r;
  if (!(in >> r.status >> r.exit_code)) return std::nullopt;
  return r;
}

}  // namespace instanced::jobs
