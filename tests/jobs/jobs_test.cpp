// The job queue in the real agent, with real processes: slots, order, GPUs (the fake
// NVML), cancel, timeouts over whole process groups, restarts, 10,000 queued jobs, bad
// submissions, and the drain before a stop through the development control plane.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <fmt/format.h>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>
#include <unistd.h>

#include "agent/jobs/spec.hpp"
#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/nvml_scenario.hpp"
#include "tests/support/unix_http.hpp"

using namespace instanced::testing;
namespace json = boost::json;

namespace {

const std::string kConfig = R"(
state_dir: {dir}/state
status:
  socket: {dir}/status.sock
  group: root
shutdown:
  timeout: 5s
disk:
  paths: []
jobs:
  log_dir: {dir}/logs
  kill_grace: 500ms
)";

class JobsAgent {
 public:
  JobsAgent(const TempDir& dir, const std::string& extra = "", std::map<std::string, std::string> env = {},
            const std::string& gpu = "gpu:\n  enabled: false\n")
      : agent_(dir, kConfig + extra + gpu), env_(std::move(env)) {
    start();
  }
  void start() {
    REQUIRE(agent_.start_and_wait_ready(10s, env_));
    http_ = std::make_unique<UnixHttp>(agent_.socket());
  }
  AgentProcess& agent() { return agent_; }
  UnixHttp& http() { return *http_; }

  // Submits a job; the reply's JSON (the status code checked).
  json::value submit(const std::string& job, unsigned want = 202) {
    auto r = http_->post("/v1/jobs", job);
    INFO(job << " -> " << r.status << " " << r.body);
    REQUIRE(r.status == want);
    return json::parse(r.body);
  }
  json::value jobs() {
    auto r = http_->get("/v1/jobs");
    REQUIRE(r.status == 200);
    return json::parse(r.body);
  }
  json::value job(const std::string& id) {
    auto r = http_->get("/v1/jobs/job?id=" + id);
    REQUIRE(r.status == 200);
    return json::parse(r.body);
  }
  std::string state(const std::string& id) { return std::string(job(id).at("state").as_string()); }
  // Polls a job until its state is `want`.
  json::value wait_state(const std::string& id, const std::string& want, std::chrono::milliseconds timeout = 20s) {
    json::value v;
    if (eventually([&] { return (v = job(id)).at("state").as_string() == want; }, timeout)) return v;
    FAIL("job " << id << " not " << want << ": " << json::serialize(v) << "\n" << agent_.log());
    return v;
  }
  // Polls /v1/jobs until nothing is queued or running.
  json::value wait_idle(std::chrono::milliseconds timeout = 60s) {
    json::value v;
    auto idle = [&] {
      v = jobs();
      return v.at("queued_count").as_int64() == 0 && v.at("running_count").as_int64() == 0;
    };
    if (eventually(idle, timeout)) return v;
    FAIL("the queue did not empty: " << json::serialize(v));
    return v;
  }

 private:
  AgentProcess agent_;
  std::map<std::string, std::string> env_;
  std::unique_ptr<UnixHttp> http_;
};

std::string sh_job(const std::string& id, const std::string& script, json::object more = {}) {
  more["id"] = id;
  more["command"] = json::array{"/bin/sh", "-c", script};
  return json::serialize(more);
}

std::vector<std::string> lines_of(const std::filesystem::path& file) {
  std::vector<std::string> out;
  std::ifstream in(file);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// Running (a zombie whose parent died is not: nobody may reap it here).
bool alive(pid_t pid) {
  std::string stat = slurp(fmt::format("/proc/{}/stat", pid));
  auto paren = stat.rfind(')');
  return paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] != 'Z';
}

// The spare monitors (`instanced-run --spare`) whose parent is `parent`.
std::vector<pid_t> spares_of(pid_t parent) {
  std::vector<pid_t> out;
  for (const auto& entry : std::filesystem::directory_iterator("/proc")) {
    const std::string name = entry.path().filename().string();
    if (name.find_first_not_of("0123456789") != std::string::npos) continue;
    std::string cmdline = slurp(entry.path() / "cmdline");
    if (!cmdline.ends_with(std::string("/instanced-run\0--spare\0", 23))) continue;
    const std::string status = slurp(entry.path() / "status");
    if (status.find(fmt::format("\nPPid:\t{}\n", parent)) != std::string::npos) out.push_back(std::stoi(name));
  }
  return out;
}

}  // namespace

TEST_CASE("50 short jobs never run more than two per CPU at once, start in order and all finish", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir);
  const long cpus = ::sysconf(_SC_NPROCESSORS_ONLN);
  CHECK(a.jobs().at("slots").as_int64() == 2 * cpus);
  std::filesystem::create_directories(dir / "running");
  // Each job counts the jobs running beside it, from the jobs themselves.
  const std::string script = fmt::format(
      "mkdir {0}/running/$INSTANCED_JOB_ID; echo $INSTANCED_JOB_ID >> {0}/started; ls {0}/running | wc -l >> {0}/counts; "
      "sleep 0.2; rmdir {0}/running/$INSTANCED_JOB_ID",
      dir.path().string());
  std::vector<std::string> ids;
  for (int i = 0; i < 50; ++i) {
    std::string id = fmt::format("j{:02}", i);
    ids.push_back(id);
    a.submit(sh_job(id, script));
  }
  auto v = a.wait_idle();
  CHECK(v.at("finished_count").as_int64() == 50);
  for (const auto& id : ids) CHECK(a.state(id) == "succeeded");
  auto counts = lines_of(dir / "counts");
  REQUIRE(counts.size() == 50);
  int most = 0;
  for (const auto& c : counts) most = std::max(most, std::stoi(c));
  CHECK(most <= 2 * cpus);
  CHECK(most >= 2);  // they did run side by side
  // Started in submission order (the agent's record of when each started).
  std::vector<std::pair<std::string, std::string>> started;
  for (const auto& id : ids) started.emplace_back(std::string(a.job(id).at("started").as_string()), id);
  for (std::size_t i = 1; i < started.size(); ++i) CHECK(started[i - 1].first <= started[i].first);
  // Metrics agree.
  auto m = a.agent().curl("http://localhost/metrics");
  CHECK_THAT(m.output, Catch::Contains("instanced_jobs_finished_total{state=\"succeeded\"} 50"));
  CHECK_THAT(m.output, Catch::Contains(fmt::format("instanced_jobs_slots {}", 2 * cpus)));
}

TEST_CASE("GPU jobs get healthy GPUs of their own and CPU jobs pass the ones that wait", "[jobs]") {
  TempDir dir;
  // Three GPUs; GPU 2 has uncorrectable ECC errors: unhealthy, never handed out.
  std::string gpus = h100(0) + "," + h100(1) + ",";
  std::string bad = h100(2);
  bad.replace(bad.find("\"ecc_uv\": 0"), 11, "\"ecc_uv\": 2");
  write_scenario(dir, "{\"driver\": \"550.54.15\", \"cuda\": 12040, \"gpus\": [" + gpus + bad + "]}");
  dir.write("kmsg", "");
  JobsAgent a(dir, "", {{"LD_LIBRARY_PATH", FAKE_NVML_DIR}, {"FAKE_NVML_SCENARIO", (dir / "scenario.json").string()}},
              "gpu:\n  interval: 200ms\n  kmsg: {dir}/kmsg\n  cuda_roots: []\n  include_dirs: []\n");
  const std::string d = dir.path().string();
  auto hold = [&](const std::string& id) {
    return fmt::format("echo \"$CUDA_VISIBLE_DEVICES\" > {0}/gpu-{1}; while [ ! -e {0}/release-{1} ]; do sleep 0.05; done", d, id);
  };
  // An answer that is not (yet) JSON is a "not yet", never an exception that ends the test.
  REQUIRE(eventually([&] {
    boost::system::error_code ec;
    auto v = json::parse(a.agent().curl("http://localhost/v1/gpu").output, ec);
    return !ec && v.is_object() && v.as_object().contains("state") && v.at("state") == "sampled";
  }));
  // More GPUs than the instance has: refused at once.
  auto refused = a.http().post("/v1/jobs", sh_job("g9", "true", {{"gpus", 4}}));
  CHECK(refused.status == 400);
  CHECK_THAT(refused.body, Catch::Contains("gpus: 4 wanted; this instance has 3"));

  a.submit(sh_job("g1", hold("g1"), {{"gpus", 1}}));
  a.submit(sh_job("g2", hold("g2"), {{"gpus", 1}}));
  a.submit(sh_job("g3", hold("g3"), {{"gpus", 1}}));
  a.submit(sh_job("all", hold("all"), {{"gpus", "all"}}));
  a.submit(sh_job("cpu", hold("cpu")));
  a.wait_state("g1", "running");
  a.wait_state("g2", "running");
  a.wait_state("cpu", "running");  // not held up by the GPU jobs before it
  // Each file once its line is written (the shell makes it before it writes).
  REQUIRE(eventually([&] {
    return slurp(dir / "gpu-g1").ends_with("\n") && slurp(dir / "gpu-g2").ends_with("\n") &&
           slurp(dir / "gpu-cpu").ends_with("\n");
  }));
  auto g1 = slurp(dir / "gpu-g1"), g2 = slurp(dir / "gpu-g2");
  CHECK(std::set<std::string>{g1, g2} == std::set<std::string>{"0\n", "1\n"});
  CHECK(slurp(dir / "gpu-cpu") == "\n");  // a CPU job sees no GPU
  auto g3 = a.job("g3");
  CHECK(g3.at("state") == "queued");
  CHECK(g3.at("waiting") == "waiting for 1 GPUs (0 free of 2 healthy)");
  CHECK(a.job("g1").at("assigned_gpus").as_array().size() == 1);
  // g1 ends: g3 gets its GPU; "all" still waits for every healthy GPU to be free.
  dir.write("release-g1", "");
  a.wait_state("g3", "running");
  CHECK(eventually([&] { return slurp(dir / "gpu-g3") == g1; }));
  CHECK(a.state("all") == "queued");
  dir.write("release-g2", "");
  dir.write("release-g3", "");
  a.wait_state("all", "running");
  CHECK(eventually([&] { return slurp(dir / "gpu-all") == "0,1\n"; }));
  dir.write("release-all", "");
  dir.write("release-cpu", "");
  a.wait_idle();
}

TEST_CASE("cancel a queued and a running job, and a timeout stops the whole process group", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir, "  slots: 1\n");
  const std::string d = dir.path().string();
  // Children in the background, in the job's process group: the timeout must reach them.
  a.submit(sh_job("slow", fmt::format("sleep 60 & echo $! > {0}/child; sleep 60 & wait", d), {{"timeout", 1.5}}));
  a.submit(sh_job("queued", "echo never"));
  a.wait_state("slow", "running");
  auto c = a.http().post("/v1/jobs/cancel?id=queued");
  CHECK(c.status == 200);
  CHECK(a.state("queued") == "cancelled");
  CHECK(a.job("queued").at("reason") == "cancelled while queued");
  REQUIRE(eventually([&] { return !slurp(dir / "child").empty(); }));
  pid_t child = std::stoi(slurp(dir / "child"));
  CHECK(alive(child));
  auto t = a.wait_state("slow", "timed_out");
  CHECK_THAT(std::string(t.at("reason").as_string()), Catch::StartsWith("timed out after 1500ms"));
  CHECK(eventually([&] { return !alive(child); }));

  // Running: stopped with SIGTERM; a job that ignores it gets SIGKILL after kill_grace.
  a.submit(sh_job("stubborn", "trap '' TERM; echo ready; while true; do sleep 0.1; done"));
  a.wait_state("stubborn", "running");
  REQUIRE(eventually([&] { return a.http().get("/v1/jobs/log?id=stubborn").body == "ready\n"; }));  // its trap is set
  auto start = std::chrono::steady_clock::now();
  c = a.http().post("/v1/jobs/cancel?id=stubborn");
  CHECK(c.status == 200);
  auto v = a.wait_state("stubborn", "cancelled");
  CHECK(std::chrono::steady_clock::now() - start >= 400ms);  // kill_grace (500ms) passed first
  CHECK(v.at("reason") == "cancelled while running");
  CHECK(a.http().post("/v1/jobs/cancel?id=stubborn").status == 409);
  CHECK(a.http().post("/v1/jobs/cancel?id=nope").status == 404);
  auto log = a.http().get("/v1/jobs/log?id=stubborn");
  CHECK(log.body == "ready\n");
}

// The issue's survival test (docs/monitor.md), shortened: a job writing a line a second
// for 10 s, the agent stopped (SIGTERM) or killed (SIGKILL) while it runs and started again
// once the job has gone on without it.
TEST_CASE("a running process job outlives the agent's stop or crash, is taken back and ends with all its output", "[jobs][monitor]") {
  const int sig = GENERATE(SIGTERM, SIGKILL);
  INFO("agent ended by signal " << sig);
  TempDir dir;
  JobsAgent a(dir, "  slots: 1\n");
  const std::string d = dir.path().string();
  a.submit(sh_job("long", fmt::format("echo $$ > {0}/long.pid; for i in $(seq 1 10); do echo line $i; sleep 1; done", d)));
  a.submit(sh_job("next1", fmt::format("echo next1 >> {0}/order", d)));
  a.submit(sh_job("next2", fmt::format("echo next2 >> {0}/order", d)));
  a.wait_state("long", "running");
  REQUIRE(eventually([&] { return a.http().get("/v1/jobs/log?id=long").body.starts_with("line 1\n"); }));
  pid_t pid = std::stoi(slurp(dir / "long.pid"));
  a.agent().signal(sig);
  REQUIRE(a.agent().wait_exit(10s));
  CHECK(alive(pid));  // the job outlived the agent
  // It goes on while the agent is away: its monitor writes its log.
  REQUIRE(eventually([&] { return slurp(dir / "logs/long.log").find("line 4\n") != std::string::npos; }, 15s));
  a.start();
  auto back = a.wait_state("long", "running");
  CHECK(a.agent().wait_log("job long: still running under its monitor"));
  CHECK(a.state("next1") == "queued");  // its slot is still taken
  auto done = a.wait_state("long", "succeeded", 30s);
  CHECK(done.at("exit_code") == 0);
  std::string all;
  for (int i = 1; i <= 10; ++i) all += fmt::format("line {}\n", i);
  CHECK(a.http().get("/v1/jobs/log?id=long").body == all);
  a.wait_idle();
  CHECK(lines_of(dir / "order") == std::vector<std::string>{"next1", "next2"});
  CHECK_THAT(a.agent().log(), !Catch::Contains("lost"));
  CHECK_FALSE(std::filesystem::exists(dir / "state/jobs/long.run"));  // its spec (variables) is gone
}

// docs/monitor.md, "The spare monitor".
TEST_CASE("without systemd a job is handed a monitor started ahead, which ends with the agent", "[jobs][monitor]") {
  TempDir dir;
  JobsAgent a(dir);
  const pid_t agent = a.agent().pid();
  CHECK(spares_of(agent).empty());  // an agent that has run no job holds none
  a.submit(sh_job("first", "true"));
  a.wait_state("first", "succeeded");
  std::vector<pid_t> spare;
  REQUIRE(eventually([&] { return (spare = spares_of(agent)).size() == 1; }));
  a.submit(sh_job("second", fmt::format("while [ ! -e {0}/go ]; do sleep 0.05; done; echo second", dir.path().string())));
  a.wait_state("second", "running");
  const auto info = dir / "state/jobs/second.run/monitor.json";
  REQUIRE(eventually([&] { return !slurp(info).empty(); }));  // written once its workload runs
  auto monitor = json::parse(slurp(info));
  CHECK(monitor.at("pid").as_int64() == spare.front());  // the spare took it
  std::vector<pid_t> next;  // and another waits (the one at work keeps its command line)
  REQUIRE(eventually([&] {
    next = spares_of(agent);
    std::erase(next, spare.front());
    return next.size() == 1;
  }));
  // Started only once the job's process was (the spare said so): not beside its start.
  // Process ids are handed out in increasing order until they wrap at pid_max.
  CHECK(next.front() > monitor.at("child").as_int64());
  dir.write("go", "");
  a.wait_state("second", "succeeded");
  CHECK(a.http().get("/v1/jobs/log?id=second").body == "second\n");
  // A SIGTERM meant for a waiting spare ends it, and cancels no later job.
  REQUIRE(::kill(next.front(), SIGTERM) == 0);
  REQUIRE(eventually([&] { return !alive(next.front()); }));
  a.submit(sh_job("third", "echo third"));
  CHECK(a.wait_state("third", "succeeded").at("exit_code") == 0);
  std::vector<pid_t> last;
  REQUIRE(eventually([&] { return (last = spares_of(agent)).size() == 1; }));  // started afresh, then a spare again
  a.agent().signal(SIGTERM);
  REQUIRE(a.agent().wait_exit(10s));
  CHECK(eventually([&] { return !alive(last.front()); }));  // its end of the socket closed
}

TEST_CASE("while the agent is down: a job that fails is failed with its status, one whose monitor dies is lost", "[jobs][monitor]") {
  TempDir dir;
  JobsAgent a(dir, "  slots: 2\n");
  const std::string d = dir.path().string();
  a.submit(sh_job("fails", fmt::format("while [ ! -e {0}/go ]; do sleep 0.05; done; echo failing; exit 3", d)));
  a.submit(sh_job("orphan", fmt::format("echo $$ > {0}/orphan.pid; exec sleep 60", d)));
  a.wait_state("fails", "running");
  a.wait_state("orphan", "running");
  REQUIRE(eventually([&] { return !slurp(dir / "orphan.pid").empty(); }));
  const pid_t orphan = std::stoi(slurp(dir / "orphan.pid"));
  a.agent().signal(SIGKILL);
  REQUIRE(a.agent().wait_exit(10s));
  // The first ends while the agent is away; the second's monitor is killed.
  dir.write("go", "");
  REQUIRE(eventually([&] { return std::filesystem::exists(dir / "state/jobs/fails.run/exit.json"); }));
  auto monitor = json::parse(slurp(dir / "state/jobs/orphan.run/monitor.json"));
  const auto monitor_pid = static_cast<pid_t>(monitor.at("pid").as_int64());
  REQUIRE(::kill(monitor_pid, SIGKILL) == 0);
  REQUIRE(eventually([&] { return !alive(monitor_pid); }));
  CHECK(alive(orphan));
  a.start();
  auto failed = a.wait_state("fails", "failed");
  CHECK(failed.at("exit_code") == 3);
  CHECK(failed.at("reason") == "exit status 3");
  CHECK(a.http().get("/v1/jobs/log?id=fails").body == "failing\n");
  auto lost = a.wait_state("orphan", "lost");
  CHECK_THAT(std::string(lost.at("reason").as_string()),
             Catch::Contains(fmt::format("its monitor (pid {}) ended without recording", monitor_pid)) &&
                 Catch::Contains("1 of its processes were still running and were stopped"));
  CHECK(eventually([&] { return !alive(orphan); }));
}

TEST_CASE("10,000 queued jobs are accepted, listed in order and kept across a restart", "[jobs]") {
  TempDir dir;
  // A start script that waits for a file: nothing may start before setup is done.
  JobsAgent a(dir, "  max_queued: 20000\nsetup:\n  log_dir: {dir}/setup-logs\n  scripts:\n    - name: gate\n"
                   "      content: |\n        while [ ! -e {dir}/go ]; do sleep 0.1; done\n");
  for (int i = 0; i < 10000; ++i)
    a.submit(json::serialize(json::object{{"id", fmt::format("q{:05}", i)}, {"command", json::array{"true"}}}));
  auto v = a.jobs();
  CHECK(v.at("queued_count").as_int64() == 10000);
  CHECK(v.at("running_count").as_int64() == 0);
  const auto& shown = v.at("queued").as_array();
  REQUIRE(shown.size() == 100);
  CHECK(shown[0].at("id") == "q00000");
  CHECK(shown[0].at("waiting") == "waiting for setup");
  CHECK(a.job("q09999").at("position").as_int64() == 10000);
  // Memory per queued job is bench/jobs' to measure (docs/benchmarks.md), not a test's.
  a.agent().signal(SIGKILL);
  a.agent().wait_exit(5s);
  a.start();
  v = a.jobs();
  CHECK(v.at("queued_count").as_int64() == 10000);
  CHECK(v.at("queued").as_array()[0].at("id") == "q00000");
  CHECK(v.at("queued").as_array()[99].at("id") == "q00099");
  CHECK(a.job("q05000").at("position").as_int64() == 5001);
  // Duplicates of queued jobs are not queued again.
  auto dup = a.submit(json::serialize(json::object{{"id", "q00042"}, {"command", json::array{"true"}}}), 200);
  CHECK(dup.at("duplicate") == true);
  CHECK(dup.at("position").as_int64() == 43);
}

// docs/jobs.md, "Restarts and crashes": once the journal holds mostly history it is rewritten
// (off the loop) with what is live, while submissions and cancels go on.
TEST_CASE("the journal is rewritten once it holds mostly history, and the next agent reads it whole", "[jobs]") {
  TempDir dir;
  // Nothing starts (setup waits for a file): jobs are queued, then cancelled; 10 kept.
  JobsAgent a(dir, "  keep_finished: 10\nsetup:\n  log_dir: {dir}/setup-logs\n  scripts:\n    - name: gate\n"
                   "      content: |\n        while [ ! -e {dir}/go ]; do sleep 0.1; done\n");
  const std::string padding(2000, 'x');  // about 2 KiB per line: 600 jobs make about 2.5 MiB of lines
  auto job_of = [&](int i) {
    return json::serialize(json::object{{"id", fmt::format("j{:03}", i)}, {"command", json::array{"echo", padding}}});
  };
  for (int i = 0; i < 600; ++i) {
    a.submit(job_of(i));
    if (i >= 100) REQUIRE(a.http().post(fmt::format("/v1/jobs/cancel?id=j{:03}", i - 100)).status == 200);
  }
  const auto journal = dir / "state/jobs/journal";
  REQUIRE(eventually([&] { return std::filesystem::file_size(journal) < (1u << 20); }));
  CHECK_FALSE(std::filesystem::exists(dir / "state/jobs/journal.new"));
  CHECK_THAT(a.agent().log(), Catch::Contains("job journal rewritten with what is live") && !Catch::Contains("cannot rewrite"));
  auto before = a.jobs();
  CHECK(before.at("queued_count").as_int64() == 100);
  CHECK(before.at("finished_count").as_int64() == 10);
  a.agent().signal(SIGKILL);
  REQUIRE(a.agent().wait_exit(5s));
  a.start();
  auto after = a.jobs();
  CHECK(after.at("queued_count").as_int64() == 100);
  CHECK(after.at("finished_count").as_int64() == 10);
  CHECK(a.job("j599").at("position").as_int64() == 100);
  CHECK(a.state("j499") == "cancelled");
  CHECK(a.http().get("/v1/jobs/job?id=j000").status == 404);  // forgotten (keep_finished)
  CHECK_THAT(a.agent().log(), !Catch::Contains("damaged"));
}

TEST_CASE("jobs an earlier version recorded one file each are read into the journal, a broken file kept aside", "[jobs]") {
  TempDir dir;
  std::filesystem::create_directories(dir / "state/jobs");
  instanced::JobsConfig config;
  instanced::jobs::JobRecord old;
  old.spec = *instanced::jobs::parse_job_spec(json::parse(R"({"id": "old", "command": ["true"]})").as_object(), config);
  old.seq = 5;
  dir.write("state/jobs/old.json", old.to_text());
  dir.write("state/jobs/broken.json", "{not json");
  JobsAgent a(dir);
  a.wait_state("old", "succeeded");
  CHECK_FALSE(std::filesystem::exists(dir / "state/jobs/old.json"));
  CHECK(std::filesystem::exists(dir / "state/jobs/broken.json.bad"));
  CHECK_THAT(a.agent().log(), Catch::Contains("job file " + (dir / "state/jobs/broken.json").string() + " is unreadable"));
  CHECK_THAT(slurp(dir / "state/jobs/journal"), Catch::Contains(R"("id":"old")"));
  // New jobs after it, in the journal too; all there after a restart.
  a.submit(R"({"id": "new", "command": ["true"]})");
  a.wait_state("new", "succeeded");
  a.agent().signal(SIGKILL);
  a.agent().wait_exit(5s);
  a.start();
  CHECK(a.job("old").at("state") == "succeeded");
  CHECK(a.job("new").at("state") == "succeeded");
}

// docs/jobs.md, "Durability": the journal on a disk whose syncs fail (failfs.cpp, a FUSE
// pass-through, under state_dir/jobs; only the journal's syncs fail, as the flag file
// names it). No job is kept running, or queued, without its record on disk.
TEST_CASE("while the journal cannot be synced: submissions refused, a started job stopped, a queued one never started",
          "[jobs][durability]") {
  TempDir dir;
  const std::string d = dir.path().string();
  std::filesystem::create_directories(dir / "disk");
  std::filesystem::create_directories(dir / "state/jobs");
  spawn({FAILFS_BIN, d + "/disk", d + "/state/jobs", d + "/syncs-fail"}, d + "/failfs.log");
  REQUIRE(eventually([&] { return run_command("mountpoint -q " + d + "/state/jobs").exit_code == 0; }));
  auto disk_fails = [&](bool fails) {
    if (fails) dir.write("syncs-fail", "journal\n");
    else std::filesystem::remove(dir / "syncs-fail");
  };
  JobsAgent a(dir, "  slots: 1\n");

  // A job that can start at once starts while its record syncs: stopped, and its
  // submission refused.
  disk_fails(true);
  auto r = a.http().post("/v1/jobs", sh_job("first", "sleep 60"));
  CHECK(r.status == 503);
  CHECK_THAT(r.body, Catch::Contains("cannot record the job: ") && Catch::Contains("Input/output error"));
  auto first = a.wait_state("first", "cancelled");
  CHECK_THAT(std::string(first.at("reason").as_string()),
             Catch::StartsWith("stopped: its record could not be written to disk (") &&
                 Catch::Contains("Input/output error"));
  CHECK(a.agent().wait_log("cannot record jobs in " + d + "/state/jobs/journal"));

  // A job that would wait in the queue: taken back, as if never submitted.
  disk_fails(false);
  a.submit(sh_job("holder", "sleep 60"));
  a.wait_state("holder", "running");
  CHECK(a.agent().wait_log("job state recorded again"));
  const std::string waiting = sh_job("waiting", fmt::format("echo ran >> {}/waiting.out", d));
  disk_fails(true);
  r = a.http().post("/v1/jobs", waiting);
  CHECK(r.status == 503);
  CHECK_THAT(r.body, Catch::Contains("cannot record the job: "));
  CHECK(a.http().get("/v1/jobs/job?id=waiting").status == 404);

  // Submitted again once the disk is back: queued. The disk fails again as its turn
  // comes: it never starts, since its record could not say that it had.
  disk_fails(false);
  CHECK(a.submit(waiting).at("state") == "queued");
  disk_fails(true);
  CHECK(a.http().post("/v1/jobs/cancel?id=holder").status == 200);
  auto never = a.wait_state("waiting", "failed");
  CHECK_THAT(std::string(never.at("reason").as_string()),
             Catch::StartsWith("cannot record the job before it starts: ") && Catch::Contains("Input/output error"));
  CHECK_FALSE(std::filesystem::exists(dir / "waiting.out"));

  // The next agent reads the journal: the job taken back is gone (its `forget` line), the
  // one submitted again is there once, ended as it was.
  disk_fails(false);
  a.agent().signal(SIGTERM);
  REQUIRE(a.agent().wait_exit(10s));
  a.start();
  CHECK(a.state("waiting") == "failed");
  CHECK(a.state("first") == "cancelled");
  CHECK(a.jobs().at("queued_count").as_int64() == 0);
  CHECK_FALSE(std::filesystem::exists(dir / "waiting.out"));
}

TEST_CASE("bad submissions are refused with the field named, from operators and the control plane", "[jobs]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  JobsAgent a(dir, "", {},
              fmt::format("gpu:\n  enabled: false\ncontrol:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n  insecure: true\n"
                          "  token_file: {{dir}}/token\n  initial_delay_max: 0s\ninstance:\n  name: vm-jobs\n",
                          cp.agent_port));
  auto r = a.http().post("/v1/jobs", R"({"command": "ls"})");
  CHECK(r.status == 400);
  CHECK_THAT(r.body, Catch::Contains("command: must be a non-empty array of strings"));
  r = a.http().post("/v1/jobs", "{not json");
  CHECK(r.status == 400);
  // A working folder that is missing or not a folder fails the job, saying which.
  dir.write("plain-file", "");
  a.submit(sh_job("wd-file", "true", {{"workdir", (dir / "plain-file").string()}}));
  a.submit(sh_job("wd-none", "true", {{"workdir", (dir / "none").string()}}));
  CHECK(a.wait_state("wd-file", "failed").at("reason") ==
        json::value("workdir " + (dir / "plain-file").string() + ": Not a directory"));
  CHECK(a.wait_state("wd-none", "failed").at("reason") ==
        json::value("workdir " + (dir / "none").string() + ": No such file or directory"));
  a.submit(R"({"id": "same", "command": ["true"]})");
  r = a.http().post("/v1/jobs", R"({"id": "same", "command": ["false"]})");
  CHECK(r.status == 409);
  CHECK_THAT(r.body, Catch::Contains("'same' is already used by another job"));
  // The control plane: submit_job's errors name args.FIELD; results come back once.
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-jobs"); }));
  auto out = cp.command("vm-jobs", R"({"id": "c-1", "name": "submit_job", "args": {"id": "cp1", "command": ["true"], "gpus": "many"}})");
  auto out2 = cp.command("vm-jobs", R"({"id": "c-2", "name": "submit_job", "args": {"id": "cp2", "command": ["/bin/sh", "-c", "echo from-cp; exit 7"]}})");
  auto out3 = cp.command("vm-jobs", R"({"id": "c-3", "name": "cancel_job", "args": {"id": "nope"}})");
  auto result = [&](const std::string& id) -> json::value {
    json::value found;
    cp.wait([&](const json::value& v) {
      auto* results = v.at("vm-jobs").as_object().if_contains("results");
      if (!results || !results->as_object().contains(id)) return false;
      found = results->at(id);
      return true;
    });
    return found;
  };
  auto c1 = result("c-1");
  INFO(json::serialize(c1));
  CHECK(c1.at("status") == "invalid");
  CHECK_THAT(std::string(c1.at("error").as_string()), Catch::StartsWith("args.gpus: '\"many\"' is not 0"));
  auto c2 = result("c-2");
  CHECK(c2.at("status") == "ok");
  CHECK(c2.at("result").at("id") == "cp2");
  CHECK(result("c-3").at("status") == "refused");
  a.wait_state("cp2", "failed");
  // The job's end reaches the control plane as an event, with its output's last lines.
  bool seen = cp.wait([](const json::value& v) {
    auto* events = v.at("vm-jobs").as_object().if_contains("recent_events");
    if (!events) return false;
    for (const auto& e : events->as_array())
      if (e.at("type") == "job_finished" && e.at("data").at("id") == "cp2")
        return e.at("data").at("state") == "failed" && e.at("data").at("tail").as_array().back() == "from-cp" &&
               e.at("data").at("job").at("exit_code") == 7;
    return false;
  });
  CHECK(seen);
}

TEST_CASE("prepare_stop waits for running jobs, cancels what is left and holds the queue", "[jobs]") {
  TempDir dir;
  DevCp cp(dir);
  cp.start();
  JobsAgent a(dir, "  slots: 2\n  stop_wait: 3s\n  drain_hold: 6s\n", {},
              fmt::format("gpu:\n  enabled: false\ncontrol:\n  endpoint: ws://127.0.0.1:{}/v1/agent\n  insecure: true\n"
                          "  token_file: {{dir}}/token\n  initial_delay_max: 0s\ninstance:\n  name: vm-drain\n",
                          cp.agent_port));
  const std::string d = dir.path().string();
  // "short" ends once released, after the drain has begun: it is running when the drain
  // counts, and ends within stop_wait, however slow the machine.
  a.submit(sh_job("short", fmt::format("while [ ! -e {}/release ]; do sleep 0.05; done; echo done", d)));
  a.submit(sh_job("long", "sleep 60"));
  a.submit(sh_job("waiting", fmt::format("touch {}/waiting-ran", d)));
  a.wait_state("short", "running");
  a.wait_state("long", "running");
  REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("vm-drain") && v.at("vm-drain").at("connected") == true; }));
  cp.command("vm-drain", R"({"id": "stop-1", "name": "prepare_stop"})");
  // The queue is held once the drain has begun: then "short" may end.
  REQUIRE(eventually([&] {
    auto w = a.job("waiting");
    auto* waiting = w.as_object().if_contains("waiting");
    return waiting && *waiting == "held: the instance is preparing to stop";
  }, 20s));
  std::ofstream(dir / "release").put('\n');
  json::value r;
  REQUIRE(cp.wait([&](const json::value& v) {
    auto* results = v.at("vm-drain").as_object().if_contains("results");
    if (!results || !results->as_object().contains("stop-1")) return false;
    r = results->at("stop-1");
    return true;
  }, 20s));
  INFO(json::serialize(r));
  CHECK(r.at("status") == "ok");
  std::string drained(r.at("result").at("drained").at("jobs").as_string());
  CHECK_THAT(drained, Catch::StartsWith("waited") && Catch::Contains("for 2 running jobs; cancelled long"));
  CHECK(a.state("short") == "succeeded");  // it ended within stop_wait
  auto long_job = a.job("long");
  CHECK(long_job.at("state") == "cancelled");
  CHECK_THAT(std::string(long_job.at("reason").as_string()), Catch::StartsWith("cancelled by prepare_stop"));
  // Held: nothing starts and nothing is accepted; the queued job stays for after the restart.
  auto waiting = a.job("waiting");
  CHECK(waiting.at("state") == "queued");
  CHECK(waiting.at("waiting") == "held: the instance is preparing to stop");
  auto refused = a.http().post("/v1/jobs", sh_job("late", "true"));
  CHECK(refused.status == 503);
  CHECK_THAT(refused.body, Catch::Contains("preparing to stop"));
  CHECK_FALSE(std::filesystem::exists(dir / "waiting-ran"));
  // The hold ends: the queue runs again.
  a.wait_state("waiting", "succeeded", 10s);
}

TEST_CASE("instancectl submits, lists, shows, follows and cancels jobs", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir, "  slots: 1\n  max_open_files: 64\n");
  const std::string ctl = instancectl_binary() + " --socket " + a.agent().socket().string() + " ";
  auto sub = run_command(ctl + "job submit --id first --env GREETING=hello --label team=nlp --cpu-weight 10 -- "
                               "/bin/sh -c 'echo $GREETING; ulimit -n; cut -d\" \" -f19 /proc/self/stat; "
                               "while [ ! -e " + (dir / "release").string() + " ]; do sleep 0.05; done; echo bye' 2>&1");
  CHECK(sub.exit_code == 0);
  CHECK(sub.output == "job first started; follow it with: instancectl job logs first --follow\n");
  sub = run_command(ctl + "job submit --id second -- sleep 30");
  CHECK(sub.output == "job second queued at position 1; follow it with: instancectl job logs second --follow\n");
  run_command(ctl + "job submit --id third -- true");
  auto list = run_command(ctl + "jobs");
  CHECK(list.exit_code == 0);
  CHECK_THAT(list.output, Catch::StartsWith("jobs: 1 of 1 slots in use, 2 queued"));
  CHECK_THAT(list.output, Catch::Contains("waiting for a slot (1 of 1 in use)"));
  // Follows the output to the end of the job, which ends once released.
  std::ofstream(dir / "release").put('\n');
  auto logs = run_command(ctl + "job logs first --follow");
  CHECK(logs.output == "hello\n64\n10\nbye\n");  // the variable, the open-file limit, the niceness
  auto show = run_command(ctl + "job show first");
  CHECK(show.exit_code == 0);
  CHECK_THAT(show.output, Catch::Contains("state             succeeded") && Catch::Contains("env_names         [\"GREETING\"]"));
  a.wait_state("second", "running");
  auto cancel = run_command(ctl + "job cancel third");
  CHECK(cancel.output == "job third cancelled\n");
  cancel = run_command(ctl + "job cancel second");
  CHECK(cancel.output == "job second: cancel requested; it is being stopped\n");
  a.wait_state("second", "cancelled");
  auto bad = run_command(ctl + "job submit --gpus lots -- true 2>&1");
  CHECK(bad.exit_code == 64);  // a usage error
  CHECK_THAT(bad.output, Catch::Contains("--gpus wants a count or 'all', not 'lots'"));
  bad = run_command(ctl + "job submit --timeout soon -- true 2>&1");
  CHECK(bad.exit_code == 3);  // the agent refused it
  CHECK_THAT(bad.output, Catch::Contains("timeout:") && Catch::Contains("(HTTP 400)"));
  bad = run_command(ctl + "job show nope 2>&1");
  CHECK_THAT(bad.output, Catch::Contains("no job 'nope' (HTTP 404)"));
}

TEST_CASE("SIGTERM with jobs running stops the agent promptly, and the job and the queue are there after the restart", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir, "  slots: 1\n");
  a.submit(sh_job("running", "sleep 60"));
  a.submit(sh_job("waiting", "echo ran"));
  a.wait_state("running", "running");
  auto t0 = std::chrono::steady_clock::now();
  a.agent().signal(SIGTERM);
  auto code = a.agent().wait_exit(10s);
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(std::chrono::steady_clock::now() - t0 < 3s);
  CHECK_THAT(a.agent().log(), !Catch::Contains("did not end"));
  a.start();
  a.wait_state("running", "running");  // taken back, under its monitor
  CHECK(a.http().post("/v1/jobs/cancel?id=running").status == 200);
  CHECK(a.wait_state("running", "cancelled").at("reason") == "cancelled while running");
  a.wait_state("waiting", "succeeded");
  CHECK(a.http().get("/v1/jobs/log?id=waiting").body == "ran\n");
}

TEST_CASE("an operator who is not root submits jobs that run as the operator", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir);
  // nobody, in the socket's group (root here): allowed on the socket, not root.
  const std::string as_nobody = "setpriv --reuid=nobody --regid=nogroup --groups=0 " + instancectl_binary() + " --socket " +
                                a.agent().socket().string() + " ";
  auto r = run_command(as_nobody + "job submit --id mine -- /bin/sh -c 'id -u' 2>&1");
  INFO(r.output);
  CHECK(r.exit_code == 0);
  auto v = a.wait_state("mine", "succeeded");
  CHECK(v.at("owner_uid") == 65534);
  CHECK(a.http().get("/v1/jobs/log?id=mine").body == "65534\n");
  // Choosing the user (root, say) is root's alone.
  r = run_command(as_nobody + "job submit --id escalate --user root -- id -u 2>&1");
  CHECK(r.exit_code == 77);  // permission denied
  CHECK_THAT(r.output, Catch::Contains("only root may choose the user of a job") && Catch::Contains("HTTP 403"));
  r = run_command(as_nobody + "job submit --id archive --image localhost/x:1 --image-archive /tmp/x.tar -- true 2>&1");
  CHECK_THAT(r.output, Catch::Contains("image_archive: only root may load images for jobs"));
  // A forged header changes nothing: the server sets it from the socket's credentials.
  auto forged = run_command("setpriv --reuid=nobody --regid=nogroup --groups=0 curl -s --unix-socket " +
                            a.agent().socket().string() +
                            " -H 'X-Instanced-Peer-Uid: 0' -d '{\"id\":\"forged\",\"command\":[\"/usr/bin/id\",\"-u\"]}' "
                            "http://localhost/v1/jobs");
  INFO(forged.output);
  auto f = a.wait_state("forged", "succeeded");
  CHECK(f.at("owner_uid") == 65534);
  CHECK(a.http().get("/v1/jobs/log?id=forged").body == "65534\n");
}

TEST_CASE("queued jobs start by themselves once the start scripts are done", "[jobs]") {
  TempDir dir;
  JobsAgent a(dir, "setup:\n  log_dir: {dir}/setup-logs\n  scripts:\n    - name: gate\n"
                   "      content: |\n        while [ ! -e {dir}/go ]; do sleep 0.05; done\n");
  a.submit(sh_job("first", "echo one"));
  a.submit(sh_job("second", "echo two"));
  // The queue has looked at it (its reason says so) and holds it while setup runs.
  CHECK(a.job("first").at("waiting") == "waiting for setup");
  CHECK(a.state("first") == "queued");
  dir.write("go", "");  // setup ends; nothing else pokes the queue
  a.wait_state("first", "succeeded", 10s);
  a.wait_state("second", "succeeded", 10s);
}
