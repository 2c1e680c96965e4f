#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/syscalls.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using instanced::testing::TempDir;

TEST_CASE("close_range closes the range and nothing else", "[common][syscalls]") {
  int a = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  REQUIRE(a >= 0);
  int b = ::fcntl(a, F_DUPFD_CLOEXEC, a + 1), c = ::fcntl(b, F_DUPFD_CLOEXEC, b + 1);
  REQUIRE((b > a && c > b));
  sys::close_range(static_cast<unsigned>(b), static_cast<unsigned>(c));
  CHECK(::fcntl(a, F_GETFD) >= 0);
  CHECK(::fcntl(b, F_GETFD) == -1);
  CHECK(::fcntl(c, F_GETFD) == -1);
  ::close(a);
}

TEST_CASE("a memfd holds a script and is sealed against change", "[common][syscalls]") {
  int fd = sys::memfd_create("test", true);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, "echo hi\n", 8) == 8);
  REQUIRE(sys::seal_memfd(fd));
  CHECK(::write(fd, "x", 1) == -1);
  CHECK(::ftruncate(fd, 0) == -1);
  ::close(fd);
}

TEST_CASE("signal abbreviations without glibc 2.32", "[common][syscalls]") {
  CHECK(std::string(sys::signal_abbrev(SIGTERM)) == "TERM");
  CHECK(std::string(sys::signal_abbrev(SIGKILL)) == "KILL");
  CHECK(std::string(sys::signal_abbrev(SIGSYS)) == "SYS");
  CHECK(sys::signal_abbrev(0) == nullptr);
  CHECK(sys::signal_abbrev(SIGRTMIN) == nullptr);
}

TEST_CASE("mount roots are told apart, bind mounts of the same file system included", "[common][syscalls]") {
  TempDir dir;
  for (const char* d : {"plain", "tmpfs", "source", "bind"}) REQUIRE(::mkdir((dir / d).c_str(), 0755) == 0);
  REQUIRE(::mount("tmpfs", (dir / "tmpfs").c_str(), "tmpfs", 0, "size=1m") == 0);
  REQUIRE(::mount((dir / "source").c_str(), (dir / "bind").c_str(), nullptr, MS_BIND, nullptr) == 0);
  int fd = ::open(dir.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  REQUIRE(fd >= 0);
  // statx's attribute where the kernel has it, and the mount-id fallback of older kernels.
  for (auto check : {&sys::is_mount_root, &sys::is_mount_root_by_mount_id}) {
    CHECK(check(fd, "plain") == std::optional<bool>(false));
    CHECK(check(fd, "source") == std::optional<bool>(false));
    CHECK(check(fd, "tmpfs") == std::optional<bool>(true));
    CHECK(check(fd, "bind") == std::optional<bool>(true));
    CHECK_FALSE(check(fd, "absent").has_value());
  }
  ::close(fd);
  ::umount2((dir / "bind").c_str(), MNT_DETACH);
  ::umount2((dir / "tmpfs").c_str(), MNT_DETACH);
}
