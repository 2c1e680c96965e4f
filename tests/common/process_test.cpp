// The real process runner: real children, their exit, their output, their group.
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <fstream>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "common/process.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
namespace asio = boost::asio;

namespace {

struct Ran {
  ExitStatus status;
  std::string output;
};

// Spawns `spec`, reads all its output and waits for it, on a loop of its own.
Ran run(const SpawnSpec& spec) {
  asio::io_context ioc;
  RealProcessRunner runner(ioc.get_executor(), false);
  auto p = runner.spawn(spec);
  REQUIRE(p.ok());
  Ran ran;
  Process& proc = **p;
  auto task = [&]() -> asio::awaitable<void> {
    std::vector<char> buf(4096);
    for (;;) {
      std::size_t n = co_await proc.read_output(std::span<char>(buf));
      if (n == 0) break;
      ran.output.append(buf.data(), n);
    }
    ran.status = co_await proc.wait();
  };
  // The runner's SIGCHLD handler keeps the loop busy for ever: stop when the task is done.
  asio::co_spawn(ioc, task(), [&](std::exception_ptr) { ioc.stop(); });
  ioc.run_for(std::chrono::seconds(20));
  return ran;
}

SpawnSpec shell(const std::string& script) { return SpawnSpec{{"/bin/sh", "-c", script}, {"PATH=/usr/bin:/bin"}, "/"}; }

}  // namespace

TEST_CASE("a child's exit status, signal and output (stdout and stderr in order)", "[process]") {
  auto ok = run(shell("echo out; echo err >&2; exit 3"));
  CHECK(ok.status.code == 3);
  CHECK(ok.status.signal == 0);
  CHECK(ok.status.describe() == "exit status 3");
  CHECK(ok.output == "out\nerr\n");
  auto killed = run(shell("kill -9 $$"));
  CHECK(killed.status.code == -1);
  CHECK(killed.status.signal == SIGKILL);
  CHECK(killed.status.describe() == "killed by signal 9 (SIGKILL)");
}

TEST_CASE("a child gets /dev/null as stdin, a session of its own, default signals, no agent fds", "[process]") {
  // The test process ignores SIGPIPE and holds an extra fd, as the agent does.
  ::signal(SIGPIPE, SIG_IGN);
  int leaked = ::open("/dev/null", O_RDONLY);  // without O_CLOEXEC on purpose
  REQUIRE(leaked > 2);
  std::ofstream("/proc/self/oom_score_adj") << "-100";  // the agent runs with -500
  auto r = run(shell("cat; echo sid=$(ps -o sid= -p $$ | tr -d ' ') pid=$$ oom=$(cat /proc/self/oom_score_adj); "
                     "grep -E '^SigIgn' /proc/self/status; ls /proc/self/fd | sort -n | tr '\\n' ' '"));
  ::close(leaked);
  ::signal(SIGPIPE, SIG_DFL);
  CHECK(r.status.code == 0);
  // cat ended at once: stdin is empty. The shell leads its own session.
  auto sid = r.output.substr(r.output.find("sid=") + 4);
  auto pid = r.output.substr(r.output.find("pid=") + 4);
  CHECK(std::stol(sid) == std::stol(pid));
  CHECK_THAT(r.output, Catch::Contains(" oom=0\n"));
  CHECK(r.output.find("SigIgn:\t0000000000000000") != std::string::npos);
  // 0, 1, 2 and the fd `ls` opens to read the directory; nothing of the parent's.
  CHECK(r.output.find("0 1 2 3 ") != std::string::npos);
  CHECK(r.output.find(" 4 ") == std::string::npos);
}

TEST_CASE("spawn failures say which step failed", "[process]") {
  asio::io_context ioc;
  RealProcessRunner runner(ioc.get_executor(), false);
  auto missing = runner.spawn(SpawnSpec{{"/nonexistent/x.sh"}, {}, "/"});
  REQUIRE_FALSE(missing.ok());
  CHECK(missing.error().message == "cannot run /nonexistent/x.sh: No such file or directory (exec)");
  instanced::testing::TempDir dir;
  dir.write("plain.sh", "#!/bin/sh\necho no\n");  // mode 0644: not executable, even for root
  auto not_exec = runner.spawn(SpawnSpec{{(dir / "plain.sh").string()}, {}, "/"});
  REQUIRE_FALSE(not_exec.ok());
  CHECK(not_exec.error().message == "cannot run " + (dir / "plain.sh").string() + ": Permission denied (exec)");
  auto bad_dir = runner.spawn(SpawnSpec{{"/bin/true"}, {}, "/nonexistent"});
  REQUIRE_FALSE(bad_dir.ok());
  CHECK(bad_dir.error().message == "cannot run /bin/true: No such file or directory (working directory)");
  auto relative = runner.spawn(SpawnSpec{{"true"}, {}, "/"});
  REQUIRE_FALSE(relative.ok());
  CHECK(relative.error().message == "the program must be an absolute path");
  ioc.run_for(std::chrono::milliseconds(100));  // the failed children are reaped
}

TEST_CASE("an fd given to the child is its fd 3, and a user is switched to with its groups", "[process]") {
  int fd = ::memfd_create("script", MFD_CLOEXEC);
  std::string text = "echo from-memfd; id -u; id -G\n";
  REQUIRE(::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()));
  ::lseek(fd, 0, SEEK_SET);
  SpawnSpec spec{{"/bin/sh", "/dev/fd/3"}, {"PATH=/usr/bin:/bin"}, "/"};
  spec.inherit_fd = fd;
  auto nobody = lookup_user("nobody");
  REQUIRE(nobody.ok());
  spec.user = *nobody;
  auto r = run(spec);
  ::close(fd);
  CHECK(r.status.code == 0);
  CHECK(r.output == "from-memfd\n65534\n65534\n");
  CHECK(lookup_user("no-such-user-here").error().message == "user 'no-such-user-here' does not exist");
}

TEST_CASE("orphans re-parented to the subreaper are reaped", "[process]") {
  asio::io_context ioc;
  RealProcessRunner runner(ioc.get_executor(), true);
  // The child starts a grandchild that outlives it by a little.
  auto p = runner.spawn(shell("(sleep 0.2; exit 0) & exit 0"));
  REQUIRE(p.ok());
  ioc.run_for(std::chrono::milliseconds(800));
  CHECK((*p)->exit_status().has_value());
  CHECK(runner.orphans_reaped() >= 1);
  ::prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
}

TEST_CASE("processes are found by the marker in their environment, also after setsid", "[process]") {
  asio::io_context ioc;
  RealProcessRunner runner(ioc.get_executor(), false);
  SpawnSpec spec = shell("setsid sleep 30 & sleep 0.1; exit 0");
  spec.env.push_back("INSTANCED_RUN_ID=test-marker-1");
  auto p = runner.spawn(spec);
  REQUIRE(p.ok());
  ioc.run_for(std::chrono::milliseconds(400));
  auto found = runner.find_marked("INSTANCED_RUN_ID=test-marker-1");
  REQUIRE(found.size() == 1);  // the setsid'd sleep; the shell has exited
  CHECK(runner.find_marked("INSTANCED_RUN_ID=test-marker").empty());  // whole entries only
  runner.signal(found[0], SIGKILL);
}
