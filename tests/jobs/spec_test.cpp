// A job's JSON: checked field by field, kept on disk and read back; the container CLI's
// command lines carry no variable's value.
#include <boost/json.hpp>
#include <catch2/catch.hpp>

#include <sys/resource.h>

#include "agent/jobs/container.hpp"
#include "agent/jobs/limits.hpp"
#include "agent/jobs/spec.hpp"

using namespace instanced;
using namespace instanced::jobs;
namespace json = boost::json;

namespace {

Result<JobSpec> parse(const std::string& text, std::string_view where = "args.") {
  JobsConfig config;
  return parse_job_spec(json::parse(text).as_object(), config, where);
}

std::string error_of(const std::string& text) {
  auto r = parse(text);
  REQUIRE_FALSE(r);
  return r.error().message;
}

}  // namespace

TEST_CASE("a job is read with every field", "[jobs]") {
  auto r = parse(R"({"id": "train-42", "image": "localhost/torch:2.3", "command": ["python", "train.py", "--epochs", "3"],
                     "env": {"WANDB_KEY": "secret-value", "X": ""}, "workdir": "/mnt/share/proj", "user": "azureuser",
                     "gpus": 2, "cpu_weight": 300, "timeout": "90m", "labels": {"team": "nlp"}})");
  REQUIRE(r);
  CHECK(r->id == "train-42");
  CHECK(r->image == "localhost/torch:2.3");
  CHECK(r->command == std::vector<std::string>{"python", "train.py", "--epochs", "3"});
  CHECK(r->env.at("WANDB_KEY") == "secret-value");
  CHECK(r->gpus.count == 2);
  CHECK_FALSE(r->gpus.all);
  CHECK(r->cpu_weight == 300);
  CHECK(r->timeout == std::chrono::minutes(90));
  CHECK(r->labels.at("team") == "nlp");
  // Status output names the variables, never their values.
  auto pub = json::serialize(r->public_json());
  CHECK_THAT(pub, Catch::Contains("WANDB_KEY") && !Catch::Contains("secret-value"));
  CHECK(parse(R"({"command": ["x"], "gpus": "all"})")->gpus.all);
  CHECK(parse(R"({"command": ["x"], "timeout": 2.5})")->timeout == std::chrono::milliseconds(2500));
  // No id: one is made.
  auto made = parse(R"({"command": ["true"]})");
  REQUIRE(made);
  CHECK(made->id.starts_with("job-"));
  CHECK(made->id != parse(R"({"command": ["true"]})")->id);
}

TEST_CASE("a bad job is refused with the field named", "[jobs]") {
  CHECK(error_of(R"({})") == "args.command: missing (an array: the program and its arguments)");
  CHECK(error_of(R"({"command": []})") == "args.command: must be a non-empty array of strings");
  CHECK(error_of(R"({"command": "ls -l"})") == "args.command: must be a non-empty array of strings");
  CHECK(error_of(R"({"command": ["ls", 3]})") == "args.command[1]: must be a string");
  CHECK(error_of(R"({"command": [""]})") == "args.command[0]: the program must not be empty");
  CHECK_THAT(error_of(R"({"command": ["x"], "id": "../etc"})"), Catch::StartsWith("args.id: '../etc' must start"));
  CHECK_THAT(error_of(R"({"command": ["x"], "id": "a/b"})"), Catch::StartsWith("args.id: 'a/b' may contain only"));
  CHECK_THAT(error_of(R"({"command": ["x"], "gpus": -1})"), Catch::StartsWith("args.gpus: '-1' is not 0, a count"));
  CHECK_THAT(error_of(R"({"command": ["x"], "gpus": "two"})"), Catch::StartsWith("args.gpus:"));
  CHECK_THAT(error_of(R"({"command": ["x"], "cpu_weight": 0})"), Catch::StartsWith("args.cpu_weight: '0'"));
  CHECK_THAT(error_of(R"({"command": ["x"], "timeout": "soon"})"), Catch::StartsWith("args.timeout:"));
  CHECK_THAT(error_of(R"({"command": ["x"], "timeout": -5})"), Catch::StartsWith("args.timeout: must be more than 0"));
  CHECK_THAT(error_of(R"({"command": ["x"], "timeout": "400d"})"), Catch::Contains("longer than jobs.max_timeout"));
  CHECK_THAT(error_of(R"({"command": ["x"], "workdir": "rel/dir"})"), Catch::StartsWith("args.workdir: 'rel/dir' must be an absolute path"));
  CHECK_THAT(error_of(R"({"command": ["x"], "env": {"1X": "a"}})"), Catch::StartsWith("args.env: '1X' is not a variable name"));
  CHECK_THAT(error_of(R"({"command": ["x"], "env": {"INSTANCED_JOB_ID": "a"}})"), Catch::Contains("set by the agent"));
  CHECK_THAT(error_of(R"({"command": ["x"], "env": {"A": 1}})"), Catch::StartsWith("args.env.A: must be a string"));
  CHECK_THAT(error_of(R"({"command": ["x"], "image": "img", "env": {"A": "x\ny"}})"), Catch::StartsWith("args.env.A:"));
  CHECK_THAT(error_of(R"({"command": ["x"], "image_archive": "/a.tar"})"), Catch::StartsWith("args.image_archive: needs 'image'"));
  CHECK_THAT(error_of(R"({"command": ["x"], "image": "--privileged"})"), Catch::StartsWith("args.image: must not start with '-'"));
  CHECK_THAT(error_of(R"({"command": ["x"], "colour": "red"})"), Catch::StartsWith("args.colour: unknown field"));
  CHECK_THAT(error_of(R"({"command": ["x"], "user": "a b"})"), Catch::StartsWith("args.user:"));
  std::string big(70000, 'x');
  CHECK_THAT(error_of(R"({"command": [")" + big + R"("]})"), Catch::Contains("larger than 65536 bytes"));
}

TEST_CASE("a job record survives its file", "[jobs]") {
  JobRecord r;
  r.spec = *parse(R"({"id": "j1", "command": ["sleep", "1"], "env": {"K": "v"}, "gpus": 1, "timeout": 30})");
  r.seq = 17;
  r.state = JobState::running;
  r.submitted = Clock::wall_time{} + std::chrono::seconds(1700000000);
  r.started = r.submitted + std::chrono::seconds(2);
  r.gpus = {3};
  r.log = "/var/log/instanced/jobs/j1.log";
  r.cancel_requested = true;
  auto back = JobRecord::parse(r.to_text());
  REQUIRE(back);
  CHECK(back->spec == r.spec);
  CHECK(back->seq == 17);
  CHECK(back->state == JobState::running);
  CHECK(back->started == r.started);
  CHECK(back->gpus == std::vector<unsigned>{3});
  CHECK(back->cancel_requested);
  // Found by the fuzzer: a timeout with milliseconds comes back whole (seconds in the file).
  JobRecord t;
  t.spec = *parse(R"({"id": "t1", "command": ["x"], "timeout": "34m33863ms"})");
  auto t_back = JobRecord::parse(t.to_text());
  REQUIRE(t_back);
  CHECK(t_back->spec.timeout == std::chrono::milliseconds(34 * 60000 + 33863));
  // A date past what the clock can hold, or a negative seq, makes the record unreadable, not a crash.
  CHECK_FALSE(parse_iso8601("2400-01-01T00:00:00Z"));
  CHECK_FALSE(JobRecord::parse(R"({"spec": {"command": ["x"]}, "state": "queued", "seq": -17})"));
  CHECK_FALSE(JobRecord::parse("{\"spec\": {\"command\": [\"x\"]}, \"state\": \"napping\"}"));
  CHECK_THAT(JobRecord::parse("{\"state\": \"queued\"}").error().message, Catch::Contains("spec"));
  CHECK_FALSE(JobRecord::parse("{not json"));
}

TEST_CASE("container command lines carry no variable's value", "[jobs]") {
  auto spec = *parse(R"({"id": "c1", "image": "localhost/img:1", "command": ["python", "x.py"], "env": {"TOKEN": "s3cr3t"},
                         "workdir": "/mnt/share/p", "cpu_weight": 200})");
  RunOptions opt;
  opt.name = container_name(spec.id);
  opt.env_file = "/var/lib/instanced/jobs/c1.env";
  opt.gpus = {1, 3};
  opt.user = std::make_pair(1000u, 1000u);
  ContainerRuntimeCli podman{RuntimeKind::podman, "/usr/bin/podman"};
  auto argv = run_argv(podman, spec, opt);
  std::string all;
  for (auto& a : argv) all += a + " ";
  CHECK(all == "/usr/bin/podman run --name instanced-job-c1 --label instanced.job=c1 --env-file /var/lib/instanced/jobs/c1.env "
               "--volume /mnt/share/p:/mnt/share/p --workdir /mnt/share/p --user 1000:1000 --cpu-shares 2048 "
               "--device nvidia.com/gpu=1 --device nvidia.com/gpu=3 localhost/img:1 python x.py ");
  CHECK(env_file_text(spec) == "TOKEN=s3cr3t\n");
  ContainerRuntimeCli docker{RuntimeKind::docker, "/usr/bin/docker"};
  auto d = run_argv(docker, spec, opt);
  CHECK(std::find(d.begin(), d.end(), "\"device=1,3\"") != d.end());
  for (const auto& a : d) CHECK(a.find("s3cr3t") == std::string::npos);
  CHECK(parse_inspect("running 0\n")->status == "running");
  CHECK(parse_inspect("exited 137")->exit_code == 137);
  CHECK_FALSE(parse_inspect(""));
}

TEST_CASE("a job's limits become its unit's properties, or what a process can be given", "[jobs]") {
  JobsConfig c;
  CHECK(unit_properties(c, 100, true) == std::vector<std::string>{"CPUWeight=100"});
  c.memory_limit = ByteSize{64 << 20};
  c.max_processes = 50;
  c.max_open_files = 1024;
  CHECK(unit_properties(c, 300, true) ==
        std::vector<std::string>{"CPUWeight=300", "MemoryMax=67108864", "TasksMax=50", "LimitNOFILE=1024"});
  // The v1 hierarchy (systemd 237): the older name, which every systemd with v1 reads.
  CHECK(unit_properties(c, 300, false)[1] == "MemoryLimit=67108864");
  CHECK(container_limit_options(c) ==
        std::vector<std::string>{"--memory", "67108864", "--pids-limit", "50", "--ulimit", "nofile=1024:1024"});
  CHECK(limits_needing_systemd(c) == std::vector<std::string>{"jobs.memory_limit", "jobs.max_processes"});
  // Without systemd: no address-space limit (it breaks CUDA's reservations), a niceness.
  SpawnSpec spec;
  apply_process_limits(c, 25, spec);
  CHECK(spec.limits == std::vector<std::pair<int, std::uint64_t>>{{RLIMIT_NOFILE, 1024}});
  CHECK(spec.nice == 6);
  // An operator's job gets no more than the default share.
  CHECK(effective_cpu_weight(5000, true) == 100);
  CHECK(effective_cpu_weight(5000, false) == 5000);
  CHECK(effective_cpu_weight(50, true) == 50);
}
