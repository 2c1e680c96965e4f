// The job journal (agent/jobs/journal.hpp) on a real file: the last line of each job wins,
// a forgotten job stays forgotten, a line cut short by a crash is ignored, a damaged one is
// named, and the file is rewritten once it holds mostly history.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <future>
#include <fstream>

#include "agent/jobs/journal.hpp"
#include "tests/fakes/fake_fs.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::jobs;
using instanced::testing::slurp;
using instanced::testing::TempDir;

namespace {

JobRecord job(const std::string& id, JobState state, std::uint64_t seq) {
  JobsConfig config;
  JobRecord r;
  r.spec = *parse_job_spec(boost::json::parse(R"({"id": ")" + id + R"(", "command": ["true"]})").as_object(), config);
  r.seq = seq;
  r.state = state;
  return r;
}

std::map<std::string, JobState> states(const JobJournal::Loaded& l) {
  std::map<std::string, JobState> out;
  for (const auto& r : l.records) out[r.spec.id] = r.state;
  return out;
}

// A journal on a real file in a test's folder, loaded (no file yet: nothing).
struct EmptyJournal {
  EmptyJournal() { REQUIRE(j.load()); }
  TempDir dir;
  RealFilesystem files;
  const std::filesystem::path file = dir / "journal";
  JobJournal j{files, file};
};

}  // namespace

TEST_CASE("the job journal: the last line of each job wins, forgotten jobs stay forgotten", "[jobs]") {
  TempDir dir;
  RealFilesystem files;
  const auto file = dir / "journal";
  {
    JobJournal j(files, file);
    REQUIRE(j.load());  // no file yet: nothing
    REQUIRE(j.append(job("a", JobState::queued, 1)));
    REQUIRE(j.append(job("b", JobState::queued, 2)));
    CHECK(j.pending());
    REQUIRE(j.append(job("a", JobState::running, 1)));
    REQUIRE(j.append(job("c", JobState::succeeded, 3)));
    REQUIRE(j.forget("c"));
    CHECK(j.has("a"));
    CHECK_FALSE(j.has("c"));  // forgotten
    CHECK_FALSE(j.has("d"));  // never written
    REQUIRE(j.commit());
    CHECK_FALSE(j.pending());
    CHECK(j.durable() == j.written());
  }
  JobJournal again(files, file);
  auto loaded = again.load();
  REQUIRE(loaded);
  CHECK(loaded->problems.empty());
  CHECK(states(*loaded) == std::map<std::string, JobState>{{"a", JobState::running}, {"b", JobState::queued}});
  // The file is 0600: records hold the jobs' variables.
  CHECK((std::filesystem::status(file).permissions() & std::filesystem::perms::all) ==
        (std::filesystem::perms::owner_read | std::filesystem::perms::owner_write));
}

TEST_CASE("a journal cut short by a crash, or damaged, loses only the lines it must", "[jobs]") {
  TempDir dir;
  RealFilesystem files;
  const auto file = dir / "journal";
  const std::string a = JobJournal::record_line(job("a", JobState::queued, 1));
  const std::string b = JobJournal::record_line(job("b", JobState::queued, 2));
  const std::string c = JobJournal::record_line(job("c", JobState::queued, 3));
  SECTION("the last write did not finish") {
    dir.write("journal", a + b + c.substr(0, c.size() / 2));
    auto loaded = JobJournal(files, file).load();
    REQUIRE(loaded);
    CHECK(states(*loaded).size() == 2);
    REQUIRE(loaded->problems.size() == 1);
    CHECK(loaded->problems[0] == "line 3: incomplete (the last write did not finish); ignored");
  }
  SECTION("a byte changed in the middle") {
    std::string damaged = b;
    damaged[damaged.size() / 2] ^= 0x20;
    dir.write("journal", a + damaged + c + "garbage\n");
    auto loaded = JobJournal(files, file).load();
    REQUIRE(loaded);
    CHECK(states(*loaded) == std::map<std::string, JobState>{{"a", JobState::queued}, {"c", JobState::queued}});
    CHECK(loaded->problems == std::vector<std::string>{"line 2: checksum mismatch", "line 4: not a journal line"});
  }
}

TEST_CASE_METHOD(EmptyJournal, "the journal is rewritten with the live records once it holds mostly history", "[jobs]") {
  std::vector<JobRecord> live{job("keep", JobState::queued, 1)};
  REQUIRE(j.append(live[0]));
  // One job changing state over and over: history piles up, what is live stays one line.
  JobRecord churn = job("churn", JobState::queued, 2);
  while (!j.wants_compaction()) REQUIRE(j.append(churn));
  CHECK(std::filesystem::file_size(file) > (1u << 20));
  live.push_back(churn);
  REQUIRE(j.compact({&live[0], &live[1]}));
  CHECK(std::filesystem::file_size(file) < 2048);
  CHECK_FALSE(j.wants_compaction());
  auto loaded = JobJournal(files, file).load();
  REQUIRE(loaded);
  CHECK(states(*loaded).size() == 2);
}

TEST_CASE_METHOD(EmptyJournal, "the journal rewritten off the loop: lines appended meanwhile kept, the rename durable at the next sync", "[jobs]") {
  std::vector<JobRecord> live{job("keep", JobState::queued, 1), job("churn", JobState::queued, 2)};
  REQUIRE(j.append(live[0]));
  while (!j.wants_compaction()) REQUIRE(j.append(live[1]));
  const std::string text = j.begin_compaction({&live[0], &live[1]});
  CHECK_FALSE(j.wants_compaction());  // one at a time
  // While another thread writes the replacement: a new job, a change, a job forgotten.
  REQUIRE(j.append(job("new", JobState::queued, 3)));
  REQUIRE(j.append(job("keep", JobState::running, 1)));
  REQUIRE(j.forget("churn"));
  REQUIRE(files.write_file_atomic(j.replacement(), text, 0600, true));
  CHECK(std::filesystem::file_size(file) > (1u << 20));  // the old file until the rename
  REQUIRE(j.finish_compaction());
  CHECK(std::filesystem::file_size(file) < 4096);
  CHECK_FALSE(std::filesystem::exists(j.replacement()));
  CHECK(j.pending());  // the rename is durable once the folder is synced
  REQUIRE(j.commit());
  CHECK_FALSE(j.pending());
  CHECK_FALSE(j.wants_compaction());
  auto loaded = JobJournal(files, file).load();
  REQUIRE(loaded);
  CHECK(loaded->problems.empty());
  CHECK(states(*loaded) == std::map<std::string, JobState>{{"keep", JobState::running}, {"new", JobState::queued}});
}

TEST_CASE("the journal's sync takes in its folder after a compaction's rename, until a sync has reached past it", "[jobs]") {
  testing::FakeFilesystem files;
  const std::filesystem::path file = "/state/jobs/journal";
  REQUIRE(files.create_directories(file.parent_path(), 0700));
  JobJournal j(files, file);
  REQUIRE(j.load());
  std::vector<JobRecord> live{job("a", JobState::queued, 1)};
  REQUIRE(j.append(live[0]));
  REQUIRE(j.syncer()());
  CHECK(files.synced_paths().empty());  // the file's fdatasync alone (append_file)
  const std::string text = j.begin_compaction({&live[0]});
  REQUIRE(files.write_file_atomic(j.replacement(), text, 0600, true));
  REQUIRE(j.finish_compaction());
  const std::uint64_t upto = j.written();
  REQUIRE(j.syncer()());
  CHECK(files.synced_paths() == std::vector<std::filesystem::path>{"/state/jobs"});
  j.synced(upto);
  REQUIRE(j.append(job("a", JobState::running, 1)));
  REQUIRE(j.syncer()());
  CHECK(files.synced_paths().size() == 1);  // reached: not again
}

TEST_CASE_METHOD(EmptyJournal, "a compaction whose replacement was not written leaves the journal as it was", "[jobs]") {
  std::vector<JobRecord> live{job("keep", JobState::queued, 1)};
  REQUIRE(j.append(live[0]));
  while (!j.wants_compaction()) REQUIRE(j.append(live[0]));
  (void)j.begin_compaction({&live[0]});
  REQUIRE(j.append(job("keep", JobState::running, 1)));
  j.abandon_compaction();
  CHECK_FALSE(j.wants_compaction());  // not again at the next change: once the file has grown by 1 MiB
  const auto failed_at = std::filesystem::file_size(file);
  while (!j.wants_compaction()) REQUIRE(j.append(job("keep", JobState::running, 1)));
  CHECK(std::filesystem::file_size(file) > failed_at + (1u << 20));
  REQUIRE(j.append(job("keep", JobState::succeeded, 1)));
  CHECK_FALSE(std::filesystem::exists(j.replacement()));
  // finish without a replacement: refused, named.
  (void)j.begin_compaction({&live[0]});
  auto r = j.finish_compaction();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message, Catch::Matchers::Contains("journal.new"));
  REQUIRE(j.commit());
  auto loaded = JobJournal(files, file).load();
  REQUIRE(loaded);
  CHECK(states(*loaded) == std::map<std::string, JobState>{{"keep", JobState::succeeded}});
}

TEST_CASE_METHOD(EmptyJournal, "the job journal's sync off the loop: what was written before it began is durable after", "[jobs]") {
  REQUIRE(j.append(job("a", JobState::queued, 1)));
  const std::uint64_t before = j.written();
  auto sync = j.syncer();
  REQUIRE(j.append(job("b", JobState::queued, 2)));  // written after `before` was taken: not counted
  REQUIRE(std::async(std::launch::async, sync).get());
  j.synced(before);
  CHECK(j.durable() == before);
  CHECK(j.pending());  // b's line waits for the next sync
  j.synced(before - 1);  // a late answer of an older sync takes nothing back
  CHECK(j.durable() == before);
  REQUIRE(j.commit());
  CHECK_FALSE(j.pending());
}

TEST_CASE("the job journal's sync names the file it could not reach", "[jobs]") {
  TempDir dir;
  RealFilesystem files;
  JobJournal j(files, dir / "gone" / "journal");  // its folder does not exist
  auto r = j.syncer()();
  REQUIRE_FALSE(r);
  CHECK_THAT(r.error().message, Catch::Matchers::Contains("gone/journal"));
}
