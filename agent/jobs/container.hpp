// The container CLI's command lines for a job (podman and docker take the same ones here),
// free of I/O so that tests read them. No variable's value is ever on a command line: the
// job's environment goes through an --env-file (mode 0600) that only root can read.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "agent/jobs/spec.hpp"

namespace instanced::jobs {

enum class RuntimeKind { podman, docker };

struct ContainerRuntimeCli {
  RuntimeKind kind = RuntimeKind::podman;
  std::string program;  // absolute path of podman or docker
};

// "instanced-job-ID": how a container is found again after an agent restart.
std::string container_name(const std::string& job_id);

struct RunOptions {
  std::string name;        // container_name()
  std::string env_file;    // "" when the job has no variables
  std::vector<unsigned> gpus;  // NVML indices
  std::optional<std::pair<unsigned, unsigned>> user;  // uid:gid, when the job does not run as root
  std::vector<std::string> extra;  // jobs.container_options
};

// `podman run --name NAME --label instanced.job=ID ... IMAGE COMMAND...`
std::vector<std::string> run_argv(const ContainerRuntimeCli& cli, const JobSpec& spec, const RunOptions& opt);
// The env file's text: NAME=value lines.
std::string env_file_text(const JobSpec& spec);
// Status and exit code of a container: "{{.State.Status}} {{.State.ExitCode}}".
std::vector<std::string> inspect_argv(const ContainerRuntimeCli& cli, const std::string& name);
std::vector<std::string> image_exists_argv(const ContainerRuntimeCli& cli, const std::string& image);
std::vector<std::string> load_argv(const ContainerRuntimeCli& cli, const std::string& archive);
std::vector<std::string> kill_argv(const ContainerRuntimeCli& cli, const std::string& name, const char* signal);
std::vector<std::string> remove_argv(const ContainerRuntimeCli& cli, const std::string& name);
std::vector<std::string> logs_argv(const ContainerRuntimeCli& cli, const std::string& name, bool follow);
std::vector<std::string> wait_argv(const ContainerRuntimeCli& cli, const std::string& name);

struct InspectResult {
  std::string status;  // created, running, paused, exited, stopped, ...
  int exit_code = 0;
};
// Parses inspect_argv's output.
std::optional<InspectResult> parse_inspect(const std::string& output);

}  // namespace instanced::jobs
