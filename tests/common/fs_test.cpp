#include <catch2/catch.hpp>
#include <sys/stat.h>

#include "common/fs.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using instanced::testing::TempDir;

TEST_CASE("atomic writes replace the file whole, with the asked mode", "[fs]") {
  TempDir dir;
  RealFilesystem fs;
  auto path = dir / "state.json";
  REQUIRE(fs.write_file_atomic(path, "{\"v\":1}", 0600).ok());
  REQUIRE(fs.write_file_atomic(path, "{\"v\":2}", 0600).ok());
  CHECK(*fs.read_file(path, 1024) == "{\"v\":2}");
  struct stat st{};
  REQUIRE(::stat(path.c_str(), &st) == 0);
  CHECK((st.st_mode & 07777) == 0600);
  std::size_t entries = 0;
  for ([[maybe_unused]] auto& e : std::filesystem::directory_iterator(dir.path())) ++entries;
  CHECK(entries == 1);  // no temporary left behind

  SECTION("a failed write names the path and leaves the old file") {
    auto r = fs.write_file_atomic(dir / "missing-dir/state.json", "x", 0600);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("missing-dir"));
    CHECK(*fs.read_file(path, 1024) == "{\"v\":2}");
  }
  SECTION("reads are capped") {
    auto r = fs.read_file(path, 3);
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("larger than 3 bytes"));
  }
}

TEST_CASE("usage reports bytes and inodes of a real file system", "[fs]") {
  RealFilesystem fs;
  auto u = fs.usage("/tmp");
  REQUIRE(u.ok());
  CHECK(u->total_bytes > 0);
  CHECK(u->avail_bytes <= u->free_bytes);
  CHECK(u->free_bytes <= u->total_bytes);
  auto missing = fs.usage("/nonexistent/path");
  REQUIRE_FALSE(missing.ok());
  CHECK_THAT(missing.error().message, Catch::Contains("/nonexistent/path"));
}

TEST_CASE("create_directories makes the chain and rejects a file in the way", "[fs]") {
  TempDir dir;
  RealFilesystem fs;
  REQUIRE(fs.create_directories(dir / "a/b/c", 0755).ok());
  CHECK(std::filesystem::is_directory(dir / "a/b/c"));
  dir.write("file", "x");
  CHECK_FALSE(fs.create_directories(dir / "file", 0755).ok());
}

TEST_CASE("rename replaces the target, sync_path syncs a file or a folder, and each failure names its path", "[fs]") {
  TempDir dir;
  RealFilesystem fs;
  REQUIRE(fs.write_file_atomic(dir / "new", "new", 0600));
  REQUIRE(fs.write_file_atomic(dir / "old", "old", 0600));
  REQUIRE(fs.rename(dir / "new", dir / "old"));
  CHECK(*fs.read_file(dir / "old", 16) == "new");
  CHECK_FALSE(std::filesystem::exists(dir / "new"));
  auto gone = fs.rename(dir / "new", dir / "old");
  REQUIRE_FALSE(gone);
  CHECK(gone.error().kind == ErrorKind::not_found);
  CHECK_THAT(gone.error().message, Catch::Matchers::StartsWith("rename " + (dir / "new").string() + " to "));
  CHECK(fs.sync_path(dir / "old"));
  CHECK(fs.sync_path(dir.path()));
  auto missing = fs.sync_path(dir / "missing");
  REQUIRE_FALSE(missing);
  CHECK_THAT(missing.error().message, Catch::Matchers::Contains((dir / "missing").string()));
}
