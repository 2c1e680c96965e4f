// The scanner against GNU du on the same real tree, with a tmpfs and a FUSE mount inside.
#include <catch2/catch.hpp>
#include <csignal>
#include <fcntl.h>
#include <sys/stat.h>
#include <fstream>
#include <sys/mount.h>
#include <thread>
#include <unistd.h>

#include "agent/disk/scanner.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::disk;
using namespace instanced::testing;
using namespace std::chrono_literals;

namespace {

std::uint64_t du(const std::string& args, const std::filesystem::path& p) {
  auto r = run_command("du -x -s " + args + " " + p.string() + " | cut -f1");
  REQUIRE(r.exit_code == 0);
  return std::stoull(r.output);
}

// A tree with what du has opinions about: nested folders, empty and sparse files, hard
// links, symlinks (to a file, to a folder, dangling), a FIFO.
void make_tree(const std::filesystem::path& root) {
  namespace fs = std::filesystem;
  for (int d = 0; d < 20; ++d) {
    fs::path dir = root / ("d" + std::to_string(d)) / ("sub" + std::to_string(d % 3));
    fs::create_directories(dir);
    for (int f = 0; f < 30; ++f) std::ofstream(dir / ("f" + std::to_string(f))) << std::string(d * 700 + f * 13, 'x');
  }
  std::ofstream(root / "big") << std::string(3 << 20, 'b');
  int fd = ::open((root / "sparse").c_str(), O_CREAT | O_WRONLY, 0644);
  REQUIRE(::ftruncate(fd, 100 << 20) == 0);  // 100 MiB apparent, nothing allocated
  ::close(fd);
  std::ofstream(root / "empty").flush();
  fs::create_hard_link(root / "big", root / "d1" / "big-again");
  fs::create_hard_link(root / "big", root / "d2" / "big-third");
  fs::create_symlink(root / "big", root / "link-to-big");
  fs::create_symlink("/usr", root / "link-to-usr");
  fs::create_symlink("nowhere", root / "dangling");
  REQUIRE(::mkfifo((root / "fifo").c_str(), 0644) == 0);
}

}  // namespace

TEST_CASE("scan totals equal du -x -B1 and du -x --apparent-size, and mounts inside are not entered",
          "[disk][scanner]") {
  TempDir dir;
  auto root = dir / "tree";
  make_tree(root);
  // A tmpfs with data inside the tree: not this file system, not counted.
  std::filesystem::create_directories(root / "d3" / "tmpfs");
  REQUIRE(::mount("tmpfs", (root / "d3" / "tmpfs").c_str(), "tmpfs", 0, "size=8m") == 0);
  std::ofstream(root / "d3" / "tmpfs" / "inside") << std::string(1 << 20, 't');
  // A FUSE mount (rclone serving a local folder) inside the tree.
  std::filesystem::create_directories(dir / "fuse-src");
  std::ofstream(dir / "fuse-src" / "remote-file") << std::string(2 << 20, 'r');
  std::filesystem::create_directories(root / "d4" / "fuse");
  pid_t rclone = spawn({"/usr/bin/rclone", "mount", (dir / "fuse-src").string(), (root / "d4" / "fuse").string(),
                        "--config", "/dev/null"},
                       (dir / "rclone.log").string());
  const bool mounted =
      eventually([&] { return run_command("grep -q ' " + (root / "d4" / "fuse").string() + " fuse' /proc/self/mounts").exit_code == 0; });
  struct Cleanup {
    std::filesystem::path tmpfs, fuse;
    pid_t rclone;
    ~Cleanup() {
      ::umount2(tmpfs.c_str(), MNT_DETACH);
      run_command("fusermount3 -uz " + fuse.string() + " 2>/dev/null");
      ::kill(rclone, SIGTERM);
    }
  } cleanup{root / "d3" / "tmpfs", root / "d4" / "fuse", rclone};
  REQUIRE(mounted);

  ScanProgress progress;
  auto r = scan_tree(root.string(), ScanOptions{2, 5, true}, progress);
  CHECK(r.error.empty());
  CHECK(r.bytes == du("-B1", root));
  CHECK(r.apparent == du("-b", root));
  CHECK(r.mounts_skipped == std::vector<std::string>{(root / "d3" / "tmpfs").string(), (root / "d4" / "fuse").string()});
  REQUIRE(r.top_files.size() == 5);
  // The hard-linked file counts once, under whichever of its names was met first.
  CHECK_THAT(r.top_files[0].path, Catch::EndsWith("big") || Catch::EndsWith("big-again") || Catch::EndsWith("big-third"));
  CHECK(r.top_files[0].bytes >= 3u << 20);
  CHECK(r.top_files[1].bytes < 3u << 20);
  // Folders without hard links total as du counts them alone.
  bool seen = false;
  for (const auto& d : r.top_dirs)
    if (d.path == (root / "d19").string()) {
      seen = true;
      CHECK(d.bytes == du("-B1", root / "d19"));
      CHECK(d.apparent == du("-b", root / "d19"));
    }
  CHECK(seen);
  CHECK(progress.files.load() == r.files);
  CHECK(r.errors == 0);
  // One thread gives the same totals.
  ScanProgress p1;
  auto one = scan_tree(root.string(), ScanOptions{1, 5, false}, p1);
  CHECK(one.bytes == r.bytes);
  CHECK(one.apparent == r.apparent);
}

TEST_CASE("a scan of something that is not a directory says so", "[disk][scanner]") {
  ScanProgress p;
  CHECK(scan_tree("/nonexistent/x", ScanOptions{}, p).error == "/nonexistent/x: No such file or directory");
  CHECK(scan_tree("/etc/hostname", ScanOptions{}, p).error == "/etc/hostname: not a directory");
}
