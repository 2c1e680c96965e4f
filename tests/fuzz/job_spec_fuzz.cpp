// libFuzzer target: a job as the control plane or an operator submits it (agent/jobs/
// spec.cpp), and the jobs' journal and a job's record in it as read back after a restart.
#include <boost/json/parse.hpp>
#include <cstdint>
#include <string_view>

#include "agent/jobs/journal.hpp"
#include "agent/jobs/spec.hpp"
#include "tests/fakes/fake_fs.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace instanced;
  using namespace instanced::jobs;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // A record or a journal of any content: what can be read and the problems, never a crash.
  (void)JobRecord::parse(text);
  testing::FakeFilesystem files;
  (void)files.write_file_atomic("/j", text);
  JobJournal journal(files, "/j");
  if (auto loaded = journal.load(); loaded && !loaded->records.empty()) {
    // What was read is written back whole: compacted, it reads back the same.
    std::vector<const JobRecord*> live;
    for (const auto& r : loaded->records) live.push_back(&r);
    if (!journal.compact(live)) __builtin_trap();
    auto again = JobJournal(files, "/j").load();
    if (!again || again->records.size() != loaded->records.size() || !again->problems.empty()) __builtin_trap();
  }
  boost::system::error_code ec;
  boost::json::parse_options opt;
  opt.max_depth = 16;
  auto v = boost::json::parse(text, ec, {}, opt);
  if (ec || !v.is_object()) return 0;
  JobsConfig config;
  auto spec = parse_job_spec(v.as_object(), config, "args.");
  if (!spec) {
    if (!spec.error().message.starts_with("args.")) __builtin_trap();  // every error names its field
    return 0;
  }
  // An accepted job has a usable id and command, and survives its state file unchanged.
  if (spec->id.empty() || spec->id.find('/') != std::string::npos || spec->command.empty()) __builtin_trap();
  JobRecord r;
  r.spec = *spec;
  auto back = JobRecord::parse(r.to_text());
  if (!back || !(back->spec == r.spec)) __builtin_trap();
  return 0;
}
