// The disk scanner as a command, so bench/disk-scan measures it as a process beside du,
// gdu and ncdu: instanced-scan ROOT [THREADS]. Prints totals and the largest entries.
#include <cstdio>
#include <cstdlib>
#include <string>

#include "agent/disk/scanner.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: instanced-scan ROOT [THREADS]\n");
    return 2;
  }
  instanced::disk::ScanOptions o;
  o.threads = argc > 2 ? static_cast<unsigned>(std::atoi(argv[2])) : 2;
  o.top = 5;
  instanced::disk::ScanProgress p;
  auto r = instanced::disk::scan_tree(argv[1], o, p);
  if (!r.error.empty()) {
    std::fprintf(stderr, "%s\n", r.error.c_str());
    return 1;
  }
  std::printf("%llu\t%s\t(%llu apparent, %llu entries, %llu dirs)\n", static_cast<unsigned long long>(r.bytes), argv[1],
              static_cast<unsigned long long>(r.apparent), static_cast<unsigned long long>(r.files),
              static_cast<unsigned long long>(r.dirs));
  for (const auto& d : r.top_dirs) std::printf("  dir  %llu\t%s\n", static_cast<unsigned long long>(d.bytes), d.path.c_str());
  for (const auto& f : r.top_files) std::printf("  file %llu\t%s\n", static_cast<unsigned long long>(f.bytes), f.path.c_str());
  return 0;
}
