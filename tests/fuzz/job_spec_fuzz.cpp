// libFuzzer target: a job as the control plane or an operator submits it (agent/jobs/
// spec.cpp), and a job's state file as read back after a restart.
#include <boost/json/parse.hpp>
#include <cstdint>
#include <string_view>

#include "agent/jobs/spec.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace instanced;
  using namespace instanced::jobs;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  // A state file of any content: a record or an error, never a crash.
  (void)JobRecord::parse(text);
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
