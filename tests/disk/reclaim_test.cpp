// Reclaim rules against prepared trees: what they delete, what they must not touch.
#include <catch2/catch.hpp>
#include <fstream>
#include <sys/mount.h>
#include <sys/stat.h>
#include <thread>

#include "agent/disk/reclaim.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::disk;
using instanced::testing::TempDir;
namespace fs = std::filesystem;

namespace {

void put(const fs::path& p, std::size_t bytes) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << std::string(bytes, 'x');
}

ReclaimContext context(const TempDir& dir) {
  ReclaimContext ctx;
  ctx.now = std::chrono::system_clock::now();
  ctx.home_roots = {(dir / "home").string()};
  return ctx;
}

}  // namespace

TEST_CASE("pip cache: everything under each home's .cache/pip goes, nothing else, symlinks not followed",
          "[disk][reclaim]") {
  TempDir dir;
  put(dir / "home/alice/.cache/pip/http/a/b/wheel1", 10000);
  put(dir / "home/alice/.cache/pip/http/c/wheel2", 20000);
  put(dir / "home/alice/.cache/other/keep", 100);
  put(dir / "home/alice/notes.ipynb", 100);
  put(dir / "outside/precious", 5000);
  // A symlink inside the cache that points outside: removed as a link, the target stays.
  fs::create_symlink(dir / "outside", dir / "home/alice/.cache/pip/escape");
  // A user whose .cache is a symlink to elsewhere: not followed at all.
  fs::create_directories(dir / "home/bob");
  put(dir / "elsewhere/pip/victim", 100);
  fs::create_symlink(dir / "elsewhere", dir / "home/bob/.cache");

  ReclaimConfig c;
  c.pip_cache.enabled = true;
  auto dry = run_rule("pip_cache", c, true, context(dir));
  REQUIRE(dry.ok());
  CHECK(dry->ran);
  CHECK(dry->files == 3);  // two wheels and the symlink
  CHECK(fs::exists(dir / "home/alice/.cache/pip/http/a/b/wheel1"));  // a dry run deletes nothing

  auto real = run_rule("pip_cache", c, false, context(dir));
  REQUIRE(real.ok());
  CHECK(real->files == 3);
  CHECK(real->bytes == dry->bytes);
  CHECK(real->bytes >= 30000);
  CHECK(real->errors == 0);
  CHECK_FALSE(fs::exists(dir / "home/alice/.cache/pip/http"));
  CHECK_FALSE(fs::is_symlink(dir / "home/alice/.cache/pip/escape"));
  CHECK(fs::exists(dir / "outside/precious"));
  CHECK(fs::exists(dir / "home/alice/.cache/other/keep"));
  CHECK(fs::exists(dir / "home/alice/notes.ipynb"));
  CHECK(fs::exists(dir / "elsewhere/pip/victim"));
}

TEST_CASE("tmp: only what is old by every clock, sockets and FIFOs stay", "[disk][reclaim]") {
  TempDir dir;
  auto tmp = dir / "tmp";
  // ctime cannot be set back: "old" files are made first, and older_than is short.
  put(tmp / "old-file", 4096);
  put(tmp / "old-dir/old-inner", 4096);
  put(tmp / "mixed-dir/old", 4096);
  put(tmp / "chmodded", 10);
  REQUIRE(::mkfifo((tmp / "old-fifo").c_str(), 0644) == 0);
  // A bind mount of a folder from the same file system: same st_dev, still never entered.
  put(dir / "elsewhere/precious", 100);
  fs::create_directories(tmp / "bound");
  REQUIRE(::mount((dir / "elsewhere").c_str(), (tmp / "bound").c_str(), nullptr, MS_BIND, nullptr) == 0);
  struct Unbind {
    fs::path p;
    ~Unbind() { ::umount2(p.c_str(), MNT_DETACH); }
  } unbind{tmp / "bound"};
  std::this_thread::sleep_for(std::chrono::milliseconds(1100));
  put(tmp / "new-file", 4096);
  put(tmp / "mixed-dir/new", 4096);
  // Old by mtime and atime, but its inode changed just now: not old by every clock.
  fs::permissions(tmp / "chmodded", fs::perms::owner_all);
  ReclaimConfig c;
  c.tmp.enabled = true;
  c.tmp.paths = {tmp.string()};
  c.tmp.older_than = std::chrono::seconds(1);
  auto r = run_rule("tmp", c, false, context(dir));
  REQUIRE(r.ok());
  CHECK(r->files == 3);
  CHECK_FALSE(fs::exists(tmp / "old-file"));
  CHECK_FALSE(fs::exists(tmp / "old-dir"));  // emptied, and old itself
  CHECK_FALSE(fs::exists(tmp / "mixed-dir/old"));
  CHECK(fs::exists(tmp / "mixed-dir/new"));
  CHECK(fs::exists(tmp / "new-file"));
  CHECK(fs::exists(tmp / "old-fifo"));
  CHECK(fs::exists(tmp / "chmodded"));
  CHECK(fs::exists(dir / "elsewhere/precious"));
}

TEST_CASE("apt archives, core dumps, blob cache, conda tarballs: their files only", "[disk][reclaim]") {
  TempDir dir;
  put(dir / "apt/a.deb", 1000);
  put(dir / "apt/partial/b.deb", 1000);
  put(dir / "apt/lock", 0);
  put(dir / "core/core.python.1234.zst", 5000);
  put(dir / "blob/c/file", 3000);
  put(dir / "conda/pkgs/numpy-1.26.tar.bz2", 7000);
  put(dir / "conda/pkgs/scipy-1.11.conda", 7000);
  put(dir / "conda/pkgs/numpy-1.26/info/index.json", 100);
  ReclaimConfig c;
  c.apt_archives = {true, {(dir / "apt").string()}};
  c.core_dumps = {true, {(dir / "core").string()}};
  c.blob_cache = {true, {(dir / "blob").string()}};
  c.conda_cache = {true, {(dir / "conda/pkgs").string()}};
  auto ctx = context(dir);
  ctx.executable = [](const std::string&) { return false; };  // no conda CLI here
  CHECK(run_rule("apt_archives", c, false, ctx)->files == 2);
  CHECK(fs::exists(dir / "apt/lock"));
  CHECK(fs::exists(dir / "apt/partial"));
  CHECK(run_rule("core_dumps", c, false, ctx)->files == 1);
  CHECK(run_rule("blob_cache", c, false, ctx)->files == 1);
  auto conda = run_rule("conda_cache", c, false, ctx);
  CHECK(conda->files == 2);
  CHECK(conda->note == "conda not found: only package tarballs");
  CHECK(fs::exists(dir / "conda/pkgs/numpy-1.26/info/index.json"));
}

TEST_CASE("command rules run their tool's CLI, or say it is missing, and rules are off unless enabled",
          "[disk][reclaim]") {
  TempDir dir;
  ReclaimConfig c;
  auto ctx = context(dir);
  std::vector<std::vector<std::string>> ran;
  ctx.run_command = [&](const std::vector<std::string>& argv) -> Result<std::pair<int, std::string>> {
    ran.push_back(argv);
    return std::make_pair(0, std::string());
  };
  auto off = run_rule("journal", c, false, ctx);
  CHECK_FALSE(off->ran);
  CHECK(off->note == "not enabled (disk.reclaim.journal.enabled)");
  c.journal.enabled = true;
  c.journal.max_size = ByteSize{256 << 20};
  ctx.executable = [](const std::string& p) { return p == "/usr/bin/journalctl" || p == "/usr/bin/podman"; };
  auto j = run_rule("journal", c, true, ctx);
  CHECK(j->commands == std::vector<std::string>{"/usr/bin/journalctl --vacuum-size=268435456"});
  CHECK(ran.empty());  // a dry run runs nothing
  REQUIRE(run_rule("journal", c, false, ctx));
  REQUIRE(ran.size() == 1);
  CHECK(ran[0] == std::vector<std::string>{"/usr/bin/journalctl", "--vacuum-size=268435456"});
  c.containers.enabled = true;
  auto k = run_rule("containers", c, false, ctx);
  CHECK(k->commands == std::vector<std::string>{"/usr/bin/podman container prune --force", "/usr/bin/podman image prune --force"});
  ctx.executable = [](const std::string&) { return false; };
  CHECK(run_rule("containers", c, false, ctx)->note == "neither podman nor docker is installed");
  CHECK(run_rule("bogus", c, false, ctx).error().message.starts_with("no reclaim rule 'bogus'; the rules are: pip_cache"));
}
