#include "agent/config/config.hpp"

#include <algorithm>
#include <fmt/format.h>
#include <set>

#include "common/config_yaml.hpp"

namespace instanced {

using config_yaml::Problems;

namespace {

void apply(std::string_view text, Config& config, Problems& problems) {
  config_yaml::apply_document(text, problems, [&config](config_yaml::Reader& reader) { config.visit(reader); });
}

// The keys one file set, from `file`. A key it set replaces what an earlier file set below
// it (a list is replaced whole: the earlier file's `storage.mounts[2].name` is gone).
void note_origins(std::map<std::string, std::filesystem::path>& origins, const std::vector<std::string>& assigned,
                  const std::string& file) {
  const std::set<std::string> now(assigned.begin(), assigned.end());
  auto below = [&now](const std::string& key) {
    return std::any_of(now.begin(), now.end(), [&key](const std::string& set) {
      return key.size() > set.size() && key.starts_with(set) && (key[set.size()] == '[' || key[set.size()] == '.');
    });
  };
  std::erase_if(origins, [&](const auto& entry) { return !now.contains(entry.first) && below(entry.first); });
  for (const auto& key : now) origins[key] = file;
}

}  // namespace

Result<LoadedConfig> load_config(const std::filesystem::path& file, const config_yaml::ReplacedDropin* replaced) {
  LoadedConfig loaded;
  auto files = config_yaml::read_config_files(file, [&loaded](std::string_view text, Problems& problems) {
    apply(text, loaded.config, problems);
    note_origins(loaded.origins, problems.assigned, problems.file);
  }, replaced);
  if (!files) return files.error();
  loaded.file = std::move(files->file);
  loaded.dropins = std::move(files->dropins);
  loaded.hash = std::move(files->hash);
  return loaded;
}

Result<Config> parse_config_text(std::string_view text, std::string_view name) {
  Config config;
  Problems problems{std::string(name), {}};
  apply(text, config, problems);
  if (!problems.lines.empty()) return Error{fmt::format("{}", fmt::join(problems.lines, "\n"))};
  return config;
}

std::string dump_config(const Config& config) {
  Config copy = config;  // visit() is shared with the reader, so it takes a mutable object
  return config_yaml::write_document([&copy](config_yaml::Writer& writer) { copy.visit(writer); });
}

std::string dump_config_with_origins(const LoadedConfig& loaded) {
  std::string out = dump_config(loaded.config);
  if (loaded.origins.empty()) return out + "# every setting above is a default\n";
  out += "# set by a file (every other setting above is a default):\n";
  for (const auto& [key, file] : loaded.origins) out += fmt::format("#   {}: {}\n", key, file.string());
  return out;
}

std::vector<std::string> secret_files(const Config& config) {
  std::vector<std::string> files{config.control.token_file};
  if (!config.proxy.credentials_file.empty()) files.push_back(config.proxy.credentials_file);
  for (const auto& m : config.storage.mounts)
    for (const auto* f : {&m.key_file, &m.sas_file})
      if (!f->empty()) files.push_back(*f);
  for (const auto& a : config.applications.apps)
    if (!a.token_file.empty()) files.push_back(a.token_file);
  return files;
}

}  // namespace instanced
