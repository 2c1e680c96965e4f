// The run folder's files (agent/monitor/workload.hpp): read back as written, hostile ones
// refused with the field named; the shared tail a follower reads while the log is written;
// and instanced-run itself on a folder: the end recorded, a cancel and a timeout honoured.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <fmt/format.h>
#include <sys/wait.h>
#include <unistd.h>

#include "agent/monitor/cgroup.hpp"
#include "agent/monitor/client.hpp"
#include "agent/monitor/workload.hpp"
#include "common/run_log.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::monitor;
using instanced::testing::eventually;
using instanced::testing::slurp;
using instanced::testing::TempDir;

namespace {

WorkloadSpec sample_spec(const TempDir& dir, std::vector<std::string> argv) {
  WorkloadSpec s;
  s.name = "job t";
  s.spawn.argv = std::move(argv);
  s.spawn.env = {"PATH=/usr/bin:/bin", "SECRET=s3cr3t"};
  s.spawn.cwd = "/";
  s.timeout = std::chrono::seconds(30);
  s.kill_grace = std::chrono::milliseconds(300);
  s.started = std::chrono::system_clock::now();
  s.log_file = (dir / "out.log").string();
  s.max_log_bytes = 1000;
  s.tail_lines = 3;
  s.marker = "INSTANCED_TEST_MARK=" + dir.path().string();  // unique to this test
  return s;
}

// The monitor beside the agent under test.
std::string monitor_program() {
  return (std::filesystem::path(instanced::testing::agent_binary()).parent_path() / kProgram).string();
}

// A run folder under `dir` holding `spec`.
std::filesystem::path write_run(const TempDir& dir, const WorkloadSpec& spec) {
  const auto run = dir / "w.run";
  std::filesystem::create_directories(run);
  RealFilesystem files;
  REQUIRE(files.write_file_atomic(run / kSpecFile, spec.to_text(), 0600));
  return run;
}

// instanced-run on `run`, to its end: its exit code.
int run_monitor(const std::filesystem::path& run) {
  return instanced::testing::run_command(monitor_program() + " " + run.string() + " 2>&1").exit_code;
}

}  // namespace

TEST_CASE("a workload's spec, its monitor and its end are read back as written", "[monitor]") {
  TempDir dir;
  WorkloadSpec s = sample_spec(dir, {"/bin/sh", "-c", "echo hi"});
  s.spawn.limits = {{7, 4096}};
  s.spawn.user = UserIdentity{"nobody", 65534, 65534, {65534, 100}, "/nonexistent", "/usr/sbin/nologin"};
  auto back = WorkloadSpec::parse(s.to_text());
  REQUIRE(back);
  CHECK(back->spawn.argv == s.spawn.argv);
  CHECK(back->spawn.env == s.spawn.env);
  CHECK(back->spawn.limits == s.spawn.limits);
  CHECK(back->spawn.user->uid == 65534);
  CHECK(back->spawn.user->groups == std::vector<gid_t>{65534, 100});
  CHECK(back->timeout == s.timeout);
  CHECK(back->kill_grace == s.kill_grace);
  CHECK(std::chrono::abs(back->started - s.started) < std::chrono::milliseconds(1));
  CHECK(back->marker == s.marker);
  CHECK_FALSE(back->keep_left_behind);
  s.keep_left_behind = true;
  s.inline_script = "echo from fd 3\n";
  CHECK(WorkloadSpec::parse(s.to_text())->keep_left_behind);
  CHECK(WorkloadSpec::parse(s.to_text())->inline_script == s.inline_script);
  CHECK_FALSE(back->own_cgroup);
  s.own_cgroup = true;
  CHECK(WorkloadSpec::parse(s.to_text())->own_cgroup);

  WorkloadExit e;
  e.outcome = Outcome::timed_out;
  e.status = ExitStatus{-1, SIGKILL};
  e.layout = LogLayout{10, 4, 0, 6};
  e.tail = {"a", "b"};
  e.left_behind = {1234, 1235};
  auto eb = WorkloadExit::parse(e.to_text());
  REQUIRE(eb);
  CHECK(eb->outcome == Outcome::timed_out);
  CHECK(eb->status.signal == SIGKILL);
  CHECK(eb->layout.produced == 10);
  CHECK(eb->tail == e.tail);
  CHECK(eb->left_behind == e.left_behind);
  CHECK_FALSE(eb->out_of_memory);
  e.out_of_memory = true;
  CHECK(WorkloadExit::parse(e.to_text())->out_of_memory);

  auto mi = MonitorInfo::parse(MonitorInfo{42, 7, 43, {}}.to_text());
  REQUIRE(mi);
  CHECK(mi->pid == 42);
  CHECK(mi->start_ticks == 7);
}

TEST_CASE("hostile run folder files are refused with the field named", "[monitor]") {
  auto err = [](auto parsed) { return parsed ? std::string("accepted") : parsed.error().message; };
  CHECK(err(WorkloadSpec::parse("{")) == "spec.json: not valid JSON: incomplete JSON");
  CHECK(err(WorkloadSpec::parse("[]")) == "spec.json: not a JSON object");
  CHECK(err(WorkloadSpec::parse(R"({"name":"x"})")) == "spec.json: argv: missing");
  CHECK(err(WorkloadSpec::parse(R"({"name":"x","argv":[1]})")) == "spec.json: argv: must be an array of strings");
  const std::string base = R"("name":"x","env":[],"cwd":"/","timeout_ms":0,"kill_grace_ms":1,"started_ms":0,)"
                           R"("log_file":"/l","max_log_bytes":100,"tail_lines":1)";
  CHECK(err(WorkloadSpec::parse("{" + base + R"(,"argv":["sh"]})")) ==
        "spec.json: argv: the program must be an absolute path");
  CHECK(err(WorkloadSpec::parse("{" + base + R"(,"argv":["/bin/sh"],"limits":[[1]]})")) ==
        "spec.json: limits: must be [resource, value] pairs");
  CHECK(err(WorkloadSpec::parse("{" + base + R"(,"argv":["/bin/sh"],"user":{"name":"n","uid":-1,"gid":0}})")) ==
        "spec.json: user: uid: must be an integer from 0 to 4294967294");
  CHECK(err(WorkloadSpec::parse("{" + base + R"(,"argv":["/bin/sh"]})")) == "accepted");
  // A time far in the future would overflow as nanoseconds: refused, not wrapped.
  std::string far = "{" + base + R"(,"argv":["/bin/sh"]})";
  far.replace(far.find(R"("started_ms":0)"), 14, R"("started_ms":9007199254740991)");
  CHECK(err(WorkloadSpec::parse(far)) == "spec.json: started_ms: must be an integer from 0 to 4398046511104");
  // What cannot be written back as it was read is refused (an int of 2^31 would wrap).
  CHECK(err(WorkloadExit::parse(R"({"outcome":"exited","code":2147483648,"signal":0,"ended_ms":900})")) ==
        "exit.json: code: must be an integer from -1 to 255");
  CHECK(err(WorkloadExit::parse(R"({"outcome":"exploded","code":0,"signal":0,"ended_ms":0})")) ==
        "exit.json: outcome: 'exploded' is not one this agent knows");
  CHECK(err(WorkloadExit::parse(R"({"outcome":"exited","code":0,"signal":0,"ended_ms":0,"left_behind":[1,-5]})")) ==
        "exit.json: left_behind: must be an array of at most 65536 process ids");
  CHECK(err(MonitorInfo::parse(R"({"pid":0,"start_ticks":1})")) == "monitor.json: pid: must be an integer from 1 to 4194304");
}

TEST_CASE("a process's start time tells it from a reused pid, and a zombie is not running", "[monitor]") {
  auto self = process_start_ticks(::getpid());
  REQUIRE(self);
  CHECK(monitor_running(MonitorInfo{::getpid(), *self, 0, {}}));
  CHECK_FALSE(monitor_running(MonitorInfo{::getpid(), *self + 1, 0, {}}));
  pid_t child = ::fork();
  if (child == 0) ::_exit(0);
  REQUIRE(eventually([&] { return !process_start_ticks(child); }));  // a zombie until reaped
  ::waitpid(child, nullptr, 0);
  CHECK_FALSE(process_start_ticks(child));
}

TEST_CASE("a follower reads a log's head from the file and its tail from the shared ring while it is written", "[monitor][log]") {
  TempDir dir;
  const auto file = dir / "run.log", ring = dir / "live.ring";
  RunLog log(file, 20, 2, {}, ring);  // 10 bytes of head, 10 of tail
  CHECK(read_live_log(file, ring, 0, 100)->data.empty());
  log.feed("0123456789abc");
  auto head = read_live_log(file, ring, 0, 100);
  REQUIRE(head);
  CHECK(head->data == "0123456789");
  CHECK(head->next == 10);
  auto tail = read_live_log(file, ring, 10, 100);
  CHECK(tail->data == "abc");
  CHECK(tail->next == 13);
  log.feed("defghijklmnop");  // 26 bytes: the ring holds the last 10
  auto later = read_live_log(file, ring, 13, 100);
  CHECK(later->skipped == 3);  // "def" was cut
  CHECK(later->data == "ghijklmnop");
  CHECK(later->next == 26);
  CHECK(read_live_log(file, ring, 26, 100)->data.empty());
  auto layout = log.finish();
  CHECK_FALSE(std::filesystem::exists(ring));  // gone with the run
  CHECK_FALSE(read_live_log(file, ring, 0, 100));
  CHECK(read_finished_log(file, layout, 16, 100).data == "ghijklmnop");
}

TEST_CASE("instanced-run records a workload's end, its output and what it left behind", "[monitor]") {
  TempDir dir;
  RealFilesystem files;
  auto spec = sample_spec(dir, {"/bin/sh", "-c", "echo one; echo two >&2; (exec sleep 60 &) ; exit 4"});
  spec.spawn.env.push_back(spec.marker);  // what it leaves carries the marker, as a job's does
  const auto run = write_run(dir, spec);
  CHECK(run_monitor(run) == 0);
  auto e = WorkloadExit::parse(slurp(run / kExitFile));
  REQUIRE(e);
  CHECK(e->outcome == Outcome::exited);
  CHECK(e->status.code == 4);
  CHECK(e->tail == std::vector<std::string>{"one", "two"});
  CHECK(e->left_behind.size() == 1);  // the sleep it left, stopped by its marker
  CHECK(read_finished_log(dir / "out.log", e->layout, 0, 100).data == "one\ntwo\n");
  auto m = MonitorInfo::parse(slurp(run / kMonitorFile));
  REQUIRE(m);
  CHECK(m->child > 0);
  CHECK_FALSE(std::filesystem::exists(run / kLiveTailFile));

  SECTION("with keep_left_behind, what it left runs on after its own end; an inline script is its fd 3") {
    spec.keep_left_behind = true;
    spec.spawn.argv = {"/bin/sh", "/dev/fd/3"};
    spec.inline_script = "echo inline; sleep 60 & echo $! > " + (dir / "left.pid").string() + "\n";
    REQUIRE(files.write_file_atomic(run / kSpecFile, spec.to_text(), 0600));
    CHECK(run_monitor(run) == 0);
    auto kept = WorkloadExit::parse(slurp(run / kExitFile));
    REQUIRE(kept);
    CHECK(kept->status.success());
    CHECK(kept->left_behind.empty());
    CHECK(read_finished_log(dir / "out.log", kept->layout, 0, 100).data == "inline\n");
    const pid_t left = std::stoi(slurp(dir / "left.pid"));
    CHECK(::kill(left, 0) == 0);  // still running
    ::kill(left, SIGKILL);
  }
  SECTION("a program that cannot be run is recorded as not started, with why") {
    spec.spawn.argv = {"/nonexistent/program"};
    REQUIRE(files.write_file_atomic(run / kSpecFile, spec.to_text(), 0600));
    CHECK(run_monitor(run) == 0);
    auto ns = WorkloadExit::parse(slurp(run / kExitFile));
    REQUIRE(ns);
    CHECK(ns->outcome == Outcome::not_started);
    CHECK_THAT(ns->reason, Catch::Contains("/nonexistent/program") && Catch::Contains("No such file"));
  }
  SECTION("a spec it cannot read is recorded, not run") {
    REQUIRE(files.write_file_atomic(run / kSpecFile, R"({"name":"x"})", 0600));
    CHECK(run_monitor(run) == 0);
    auto bad = WorkloadExit::parse(slurp(run / kExitFile));
    REQUIRE(bad);
    CHECK(bad->outcome == Outcome::not_started);
    CHECK(bad->reason == "spec.json: argv: missing");
  }
}

TEST_CASE("instanced-run stops its workload on the timeout and on a cancel, SIGKILL after the grace", "[monitor]") {
  TempDir dir;
  RealFilesystem files;
  auto spec = sample_spec(dir, {"/bin/sh", "-c", "trap '' TERM; echo ready; while true; do sleep 0.05; done"});
  SECTION("timeout") {
    spec.timeout = std::chrono::milliseconds(500);
    const auto run = write_run(dir, spec);
    CHECK(run_monitor(run) == 0);
    auto e = WorkloadExit::parse(slurp(run / kExitFile));
    REQUIRE(e);
    CHECK(e->outcome == Outcome::timed_out);
    CHECK(e->status.signal == SIGKILL);  // it ignored SIGTERM
  }
  SECTION("cancel, through the agent's side") {
    const auto run = write_run(dir, spec);
    const std::string program = monitor_program();
    pid_t pid = ::fork();
    if (pid == 0) {
      ::execl(program.c_str(), program.c_str(), run.c_str(), nullptr);
      ::_exit(127);
    }
    REQUIRE(eventually([&] { return slurp(dir / "out.log") == "ready\n"; }));  // its trap is set
    auto found = Run::find(files, run);
    REQUIRE(std::holds_alternative<Run>(found));
    std::get<Run>(found).cancel(files);
    int st = 0;
    REQUIRE(::waitpid(pid, &st, 0) == pid);
    CHECK(WEXITSTATUS(st) == 0);
    auto e = WorkloadExit::parse(slurp(run / kExitFile));
    REQUIRE(e);
    CHECK(e->outcome == Outcome::cancelled);
    CHECK(e->status.signal == SIGKILL);
    auto after = Run::find(files, run);
    CHECK(std::holds_alternative<WorkloadExit>(after));
  }
}

TEST_CASE("a unit's OOM kills are counted where its hierarchy keeps them", "[monitor]") {
  const std::string unit = "/instanced.slice/instanced-jobs.slice/instanced-job-j1.service";
  // cgroup v2 alone (Debian 11 and later, Ubuntu 22.04): memory.events of the group.
  CHECK(oom_counter_file("0::" + unit + "\n", "/sys/fs/cgroup", true) ==
        "/sys/fs/cgroup" + unit + "/memory.events");
  // v1 (Ubuntu 18.04's systemd 237, hybrid or legacy): the memory controller's group.
  const std::string legacy = "12:pids:" + unit + "\n4:memory:" + unit + "\n1:name=systemd:" + unit + "\n0::" + unit + "\n";
  CHECK(oom_counter_file(legacy, "/sys/fs/cgroup", false) == "/sys/fs/cgroup/memory" + unit + "/memory.oom_control");
  CHECK(oom_counter_file("5:cpu,memory:/\n", "/sys/fs/cgroup", false) == "/sys/fs/cgroup/memory/memory.oom_control");
  // No memory controller anywhere, or v2 not at the root (hybrid's /sys/fs/cgroup/unified).
  CHECK_FALSE(oom_counter_file("0::" + unit + "\n", "/sys/fs/cgroup", false));
  CHECK_FALSE(oom_counter_file("3:pids:/a\n", "/sys/fs/cgroup", true));
  // Paths that would lead elsewhere are not followed.
  CHECK_FALSE(oom_counter_file("0::/a/../../etc\n", "/sys/fs/cgroup", true));
  CHECK_FALSE(oom_counter_file("4:memory:relative\n", "/sys/fs/cgroup", false));
  CHECK_FALSE(oom_counter_file("garbage", "/sys/fs/cgroup", true));

  CHECK(oom_kills("low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n") == 2u);
  CHECK(oom_kills("oom_kill_disable 0\nunder_oom 0\noom_kill 7") == 7u);
  CHECK_FALSE(oom_kills("oom_kill_disable 0\nunder_oom 0\n"));
  CHECK_FALSE(oom_kills("oom_kill x\n"));
  CHECK_FALSE(oom_kills("oom_kill 99999999999999999999999\n"));
}
