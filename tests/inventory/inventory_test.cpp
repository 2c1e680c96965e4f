// The inventory's parts (agent/inventory): the host's read from a folder laid out as /etc,
// /proc and /sys, what is missing or garbled left out; Azure's compute document read, a
// hostile one refused with the field named. Its delivery in hello and get_inventory, with
// a metadata service on loopback and without one: tests/control/channel_test.cpp.
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>

#include "agent/inventory/inventory.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using namespace instanced::inventory;
using instanced::testing::TempDir;
namespace json = boost::json;

namespace {

// A root with the files of an Ubuntu 18.04 VM with two CPUs, one disk and a loop device.
void write_host(const TempDir& root) {
  root.write("etc/os-release",
             "NAME=\"Ubuntu\"\nVERSION=\"18.04.6 LTS (Bionic Beaver)\"\nID=ubuntu\nID_LIKE=debian\n"
             "PRETTY_NAME=\"Ubuntu 18.04.6 LTS\"\nVERSION_ID=\"18.04\"\n");
  root.write("proc/sys/kernel/osrelease", "4.15.0-212-generic\n");
  root.write("proc/cpuinfo",
             "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7V13 64-Core Processor\n\n"
             "processor\t: 1\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7V13 64-Core Processor\n\n");
  root.write("proc/meminfo", "MemTotal:       230000000 kB\nMemFree:        1000 kB\n");
  root.write("sys/block/sda/size", "62914560\n");
  std::filesystem::create_directories(root / "sys/block/sda/device");
  root.write("sys/block/loop0/size", "1024\n");  // no device: not a disk
}

}  // namespace

TEST_CASE("the host's inventory is read from /etc, /proc and /sys, and what is missing is left out", "[inventory]") {
  TempDir root;
  write_host(root);
  auto host = host_part(root.path());
  INFO(json::serialize(host));
  CHECK(host.at("os") == json::parse(R"({"id":"ubuntu","name":"Ubuntu","version":"18.04","pretty":"Ubuntu 18.04.6 LTS"})"));
  CHECK(host.at("kernel") == "4.15.0-212-generic");
  CHECK_FALSE(host.at("arch").as_string().empty());  // this machine's
  CHECK(host.at("cpu") == json::parse(R"({"count":2,"model":"AMD EPYC 7V13 64-Core Processor"})"));
  CHECK(host.at("memory_bytes") == 230000000ULL * 1024);
  CHECK(host.at("disks") == json::parse(R"([{"name":"sda","bytes":32212254720}])"));

  SECTION("missing and garbled files: those parts are absent, the rest is kept") {
    std::filesystem::remove(root / "etc/os-release");
    root.write("proc/meminfo", "MemTotal: lots\n");
    root.write("sys/block/sda/size", "\n");
    root.write("proc/cpuinfo", std::string(100, '\0'));
    auto partial = host_part(root.path());
    INFO(json::serialize(partial));
    CHECK_FALSE(partial.contains("os"));
    CHECK_FALSE(partial.contains("memory_bytes"));
    CHECK_FALSE(partial.contains("disks"));
    CHECK_FALSE(partial.contains("cpu"));
    CHECK(partial.at("kernel") == "4.15.0-212-generic");
  }
  SECTION("text that is not UTF-8 is escaped, and a long value is cut at a character's boundary") {
    root.write("etc/os-release", "NAME=\"Ubu\xffntu\"\nPRETTY_NAME=\"" + std::string(200, 'a') + std::string(40, '\xc3') +
                                     "\"\nVERSION_ID=" + [] {
                                       std::string e;
                                       for (int i = 0; i < 200; ++i) e += "\xc3\xa9";  // é
                                       return e;
                                     }() + "\n");
    auto os = host_part(root.path()).at("os");
    CHECK(os.at("name") == "Ubu\\xffntu");
    const std::string version(os.at("version").as_string());
    CHECK(version.size() == 256);  // 128 whole characters
    CHECK(version.substr(0, 2) == "\xc3\xa9");
    CHECK(version.substr(254) == "\xc3\xa9");
    CHECK(os.at("pretty").as_string().size() <= 256);
    CHECK_NOTHROW(json::parse(json::serialize(os)));  // valid UTF-8 throughout
  }
  SECTION("a FIFO where a file should be is not waited for") {
    std::filesystem::remove(root / "proc/meminfo");
    REQUIRE(::mkfifo((root / "proc/meminfo").c_str(), 0600) == 0);
    CHECK_FALSE(host_part(root.path()).contains("memory_bytes"));
  }
}

TEST_CASE("the host's inventory of this machine names its kernel, CPUs and memory", "[inventory]") {
  auto host = host_part("/");
  INFO(json::serialize(host));
  CHECK(host.at("cpu").at("count").to_number<long>() >= 1);
  CHECK(host.at("memory_bytes").to_number<std::uint64_t>() > 0);
  CHECK_FALSE(host.at("kernel").as_string().empty());
  auto agent = agent_part();
  CHECK(agent.at("version") == INSTANCED_VERSION);
  CHECK_THAT(std::string(agent.at("tls").as_string()), Catch::StartsWith("OpenSSL"));
}

TEST_CASE("Azure's compute document gives the VM's identity, and a hostile one is refused with the field named", "[inventory]") {
  const std::string doc = R"({"location":"westeurope","vmId":"13f56399-bd52","vmSize":"Standard_NC24ads_A100_v4",
    "storageProfile":{"imageReference":{"id":"","publisher":"microsoft-dsvm","offer":"ubuntu-hpc","sku":"1804",
    "version":"18.04.2021120101"}},"name":"ws-gpu-01"})";
  auto cloud = parse_azure_compute(doc);
  REQUIRE(cloud);
  CHECK(*cloud == json::parse(R"({"provider":"azure","vm_id":"13f56399-bd52","size":"Standard_NC24ads_A100_v4",
    "region":"westeurope","image":"microsoft-dsvm:ubuntu-hpc:1804:18.04.2021120101"})"));

  SECTION("a gallery image is named by its id; no image reference, no image") {
    auto gallery = parse_azure_compute(
        R"({"location":"x","vmId":"y","vmSize":"z","storageProfile":{"imageReference":{"id":"/subscriptions/s/images/i"}}})");
    REQUIRE(gallery);
    CHECK(gallery->at("image") == "/subscriptions/s/images/i");
    auto bare = parse_azure_compute(R"({"location":"x","vmId":"y","vmSize":"z","storageProfile":7})");
    REQUIRE(bare);
    CHECK_FALSE(bare->contains("image"));
    const std::string part(100, 'p');  // four parts of 100: over the cap when joined
    auto long_image = parse_azure_compute(fmt::format(
        R"({{"location":"x","vmId":"y","vmSize":"z","storageProfile":{{"imageReference":{{"publisher":"{0}","offer":"{0}","sku":"{0}","version":"{0}"}}}}}})",
        part));
    REQUIRE(long_image);
    CHECK_FALSE(long_image->contains("image"));
  }
  SECTION("hostile answers") {
    auto refused = [](const std::string& body) {
      auto r = parse_azure_compute(body);
      REQUIRE_FALSE(r);
      return r.error().message;
    };
    CHECK(refused(R"({"location":"x","vmSize":"z"})") == "vmId: missing");
    CHECK(refused(R"({"location":"x","vmId":7,"vmSize":"z"})") == "vmId: not a string");
    CHECK(refused(R"({"location":"x","vmId":"y","vmSize":")" + std::string(300, 'a') + R"("})") ==
          "vmSize: empty or over 256 characters");
    CHECK(refused("[1,2]") == "not a JSON object");
    CHECK_THAT(refused("<html>"), Catch::StartsWith("not JSON: "));
    CHECK(refused(std::string(100000, '[') + std::string(100000, ']')) == "not JSON: too deep");
  }
}
