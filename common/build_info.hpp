// How this binary was built, for `--version`, the status API and support: the compiler,
// the C++ library, the glibc it was built against (the oldest it runs on) and the TLS
// library it runs with.
#pragma once

#include <string>

namespace instanced {

// "0.1.0": the version this binary reports (hello, --version, the inventory).
const char* build_version();

// "clang 19.1.7, libc++ 190107, glibc 2.17": compiler, C++ library and glibc headers.
std::string build_toolchain();

// The lines `--version` prints after the first: the toolchain and the TLS library.
std::string build_description();

}  // namespace instanced
