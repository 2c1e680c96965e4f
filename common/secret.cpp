#include "common/secret.hpp"

#include "common/fs.hpp"

#include <sys/stat.h>

namespace instanced {

namespace {
constexpr std::size_t kMaxSecretBytes = 64 << 10;  // a token or a storage key: far less
}  // namespace

Result<Secret> read_secret_file(const std::string& path, std::string_view what) {
  // One descriptor for the check and the read: a file swapped for a FIFO between the two
  // cannot stall the agent, nor one swapped for a readable copy pass the mode check.
  struct stat st {};
  auto text = read_regular_file(path, kMaxSecretBytes, &st);
  if (!text) return Error{fmt::format("{} {}", what, text.error().message)};
  if (st.st_mode & 077)
    return Error{fmt::format("{} {}: mode {:04o} lets others read it; chmod 600 it", what, path, st.st_mode & 07777)};
  std::string value = text->substr(0, text->find('\n'));
  while (!value.empty() && (value.back() == '\r' || value.back() == ' ' || value.back() == '\t')) value.pop_back();
  if (value.empty()) return Error{fmt::format("{} {}: empty", what, path)};
  return Secret(std::move(value));
}

}  // namespace instanced
