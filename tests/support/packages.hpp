// Self-update's test material: small .deb packages, Ed25519 keys and signatures made with
// the openssl command line as a release process would (docs/update.md), and a stand-in
// installer with the real one's arguments and files (packaging/instanced-update).
#pragma once

#include <catch2/catch.hpp>
#include <filesystem>
#include <fmt/format.h>
#include <string>
#include <sys/stat.h>

#include "tests/support/agent_process.hpp"

namespace instanced::testing {

struct Package {
  std::string name;  // its file in the served folder
  std::string sha256;
};

// A .deb named `package` at `version`, in DIR/files.
inline Package make_package(const TempDir& dir, const std::string& package, const std::string& version) {
  const std::string tag = package + "_" + version;
  std::filesystem::create_directories(dir / ("pkgs/" + tag + "/DEBIAN"));
  std::filesystem::create_directories(dir / "files");
  dir.write("pkgs/" + tag + "/DEBIAN/control",
            fmt::format("Package: {}\nVersion: {}\nArchitecture: all\nMaintainer: test <t@example.invalid>\n"
                        "Description: a test package\n",
                        package, version));
  const std::string deb = (dir / ("files/" + tag + ".deb")).string();
  REQUIRE(run_command(fmt::format("dpkg-deb --build {} {}", (dir / ("pkgs/" + tag)).string(), deb)).exit_code == 0);
  auto sum = run_command("sha256sum " + deb);
  REQUIRE(sum.exit_code == 0);
  return {tag + ".deb", sum.output.substr(0, 64)};
}

inline std::string new_key(const TempDir& dir, const std::string& name) {
  auto pub = run_command(fmt::format("openssl genpkey -algorithm ed25519 -out {0}/{1}.pem && "
                                     "openssl pkey -in {0}/{1}.pem -pubout -outform DER | tail -c 32 | base64 -w0",
                                     dir.path().string(), name));
  REQUIRE(pub.exit_code == 0);
  return pub.output;
}

inline std::string sign(const TempDir& dir, const std::string& key, const std::string& version, const std::string& sha256) {
  dir.write("message", fmt::format("instanced-update {} sha256:{}", version, sha256));
  auto sig = run_command(fmt::format("openssl pkeyutl -sign -rawin -inkey {0}/{1}.pem -in {0}/message | base64 -w0",
                                     dir.path().string(), key));
  REQUIRE(sig.exit_code == 0);
  return sig.output;
}

// The stand-in installer: records the package it was given, then its arguments, each file
// whole by a rename (a test that sees the arguments finds the whole package), waits to be
// told how the update ended, and writes that as the real one does (under the lock). With
// the file installer-dies, it ends at once without a verdict (as when it is killed).
inline void put_installer(const TempDir& dir) {
  std::filesystem::create_directories(dir / "bin");
  dir.write("bin/installer", fmt::format(R"(#!/bin/sh
cp "$1/new.deb" {0}/installed.deb.part && mv {0}/installed.deb.part {0}/installed.deb
{{ cat {0}/installer-args 2>/dev/null; echo "$@"; }} > {0}/installer-args.part && mv {0}/installer-args.part {0}/installer-args
[ -e {0}/installer-dies ] && exit 3
while [ ! -e {0}/installer-go ]; do sleep 0.05; done
exec 9>"$1/lock"
flock 9
echo 'the stand-in installer rolled it back' > "$1/reason"
echo rolled_back > "$1/state"
)",
                                         dir.path().string()));
  ::chmod((dir / "bin/installer").c_str(), 0755);
}

}  // namespace instanced::testing
