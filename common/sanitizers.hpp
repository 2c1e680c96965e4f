// Which sanitizer a build runs under, for the few places that must differ there.
// GCC says so with __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__; clang 19 (the asan and tsan
// presets' compiler) only through __has_feature.
#pragma once

#if defined(__SANITIZE_ADDRESS__)
#define INSTANCED_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define INSTANCED_ASAN 1
#endif
#endif

#if defined(__SANITIZE_THREAD__)
#define INSTANCED_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define INSTANCED_TSAN 1
#endif
#endif
