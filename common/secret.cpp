#include "common/secret.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sys/stat.h>

namespace instanced {

Result<Secret> read_secret_file(const std::string& path, std::string_view what) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) return Error{fmt::format("{} {}: {}", what, path, std::strerror(errno))};
  if (!S_ISREG(st.st_mode)) return Error{fmt::format("{} {}: not a regular file", what, path)};
  if (st.st_mode & 077)
    return Error{fmt::format("{} {}: mode {:04o} lets others read it; chmod 600 it", what, path, st.st_mode & 07777)};
  std::ifstream in(path);
  std::string value;
  std::getline(in, value);
  while (!value.empty() && (value.back() == '\r' || value.back() == ' ' || value.back() == '\t')) value.pop_back();
  if (value.empty()) return Error{fmt::format("{} {}: empty", what, path)};
  return Secret(std::move(value));
}

}  // namespace instanced
