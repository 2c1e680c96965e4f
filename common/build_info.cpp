#include "common/build_info.hpp"

#include <fmt/format.h>
#include <version>

#include "common/tls.hpp"

namespace instanced {

const char* build_version() { return INSTANCED_VERSION; }

std::string build_toolchain() {
#if defined(__clang__)
  std::string compiler = fmt::format("clang {}.{}.{}", __clang_major__, __clang_minor__, __clang_patchlevel__);
#else
  std::string compiler = fmt::format("gcc {}.{}.{}", __GNUC__, __GNUC_MINOR__, __GNUC_PATCHLEVEL__);
#endif
#if defined(_LIBCPP_VERSION)
  std::string library = fmt::format("libc++ {}", _LIBCPP_VERSION);
#else
  std::string library = fmt::format("libstdc++ {}", __GLIBCXX__);
#endif
  return fmt::format("{}, {}, glibc {}.{}", compiler, library, __GLIBC__, __GLIBC_MINOR__);
}

std::string build_description() {
  return fmt::format("built with {}\n{}\n", build_toolchain(), tls::library_version());
}

}  // namespace instanced
