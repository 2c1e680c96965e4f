// update_agent on the real agent, asked by the development control plane, which serves the
// packages over https (the test CA): refusals before and after the download, and a good
// package handed to the installer. The installer here is a stand-in with the real one's
// arguments and files (state_dir/update): this machine's dpkg is not the test's to change.
// The real installer (packaging/instanced-update) installs and rolls back real packages in
// the package's end-to-end test on systemd (tests/packaging/e2e).
#include <algorithm>
#include <boost/json.hpp>
#include <catch2/catch.hpp>
#include <fmt/format.h>
#include <sys/stat.h>

#include "tests/support/agent_process.hpp"
#include "tests/support/devcp.hpp"
#include "tests/support/packages.hpp"

using namespace instanced::testing;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

std::string config(int port, const std::string& key, const std::string& keep_free = "1MiB",
                   const std::string& extra = "") {
  return connected_agent_yaml(fmt::format("  endpoint: wss://localhost:{}/v1/agent\n  ca_file: {{dir}}/pki/ca.pem\n", port),
                              fmt::format(R"(update:
  public_keys: ['{}']
  ca_file: {{dir}}/pki/ca.pem
  installer: {{dir}}/bin/installer
  keep_free: {}
  max_bytes: 1MiB
  confirm_within: 1m
{})",
                                          key, keep_free, extra));
}

}  // namespace

TEST_CASE("update_agent: signed packages over https handed to the installer, everything else refused before "
          "anything is installed",
          "[update][agent]") {
  TempDir dir;
  REQUIRE(run_command(std::string(TEST_SOURCE_DIR) + "/control/make-test-ca " + (dir / "pki").string()).exit_code == 0);
  const std::string key = new_key(dir, "release"), other = new_key(dir, "other");
  const Package good = make_package(dir, "instanced", "9.9.9"), foreign = make_package(dir, "other", "9.9.9");
  put_installer(dir);
  DevCp cp(dir, {"--tls-cert", (dir / "pki/server.pem").string(), "--tls-key", (dir / "pki/server.key").string(),
                 "--files", (dir / "files").string()});
  cp.start();
  auto url = [&](const Package& p) { return fmt::format("https://localhost:{}/v1/files/{}", cp.agent_port, p.name); };
  auto update = [&](const std::string& id, const std::string& u, const std::string& sha, const std::string& sig,
                    const std::string& version = "9.9.9") {
    cp.command("ws-test", fmt::format(R"({{"id":"{}","name":"update_agent","args":{{"version":"{}","url":"{}","sha256":"{}","signature":"{}"}}}})",
                                      id, version, u, sha, sig));
  };
  auto result_of = [&](const std::string& id) {
    REQUIRE(cp.wait([&](const json::value& v) { return v.at("ws-test").at("results").as_object().contains(id); }, 60s));
    return cp.instances().at("ws-test").at("results").at(id);
  };
  auto served = [&] { return slurp(dir / "devcp.log").find("devcp: serving") != std::string::npos; };
  auto ctl_update = [&] { return run_command(instancectl_binary() + " --socket " + (dir / "status.sock").string() + " update status"); };

  auto start = [&](const std::string& keep_free = "1MiB", const std::string& extra = "") {
    auto agent = std::make_unique<AgentProcess>(dir, config(cp.agent_port, key, keep_free, extra));
    REQUIRE(agent->start_and_wait_ready());
    REQUIRE(cp.wait([](const json::value& v) { return v.as_object().contains("ws-test") && v.at("ws-test").at("connected") == true; }));
    return agent;
  };

  SECTION("refused before the download: arguments that are wrong, a signature by no listed key") {
    auto agent = start();
    update("no-sha", url(good), "", sign(dir, "release", "9.9.9", good.sha256));
    CHECK(result_of("no-sha").at("error") == "args.sha256: 64 hexadecimal digits are required");
    update("http", "http://localhost/x.deb", good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    CHECK(result_of("http").at("error") == "args.url: https:// is required");
    update("other-key", url(good), good.sha256, sign(dir, "other", "9.9.9", good.sha256));
    auto r = result_of("other-key");
    CHECK(r.at("status") == "refused");
    CHECK(r.at("error") == "signature: made by none of the 1 key(s) in update.public_keys");
    // Signed for another version: the signature binds the version too.
    update("other-version", url(good), good.sha256, sign(dir, "release", "9.9.8", good.sha256));
    CHECK(result_of("other-version").at("status") == "refused");
    CHECK_FALSE(served());
    CHECK_FALSE(fs::exists(dir / "installer-args"));
    auto shown = ctl_update();
    CHECK(shown.exit_code == 2);
    CHECK_THAT(shown.output, Catch::Contains("refused") && Catch::Contains("signature: made by none"));
  }

  SECTION("refused while the disk guardian holds work back (the 5 GB rule), nothing downloaded") {
    // The guardian watches the test's folder with a recovery limit it is always below.
    auto agent = start("1MiB", "disk:\n  interval: 100ms\n  hold: 0s\n  scan_root: {dir}\n  paths:\n"
                               "    - path: {dir}\n      recovery: 1000000TiB\n");
    REQUIRE(eventually([&] { return agent->curl("http://localhost/v1/disk").output.find("\"work_allowed\":false") != std::string::npos; }));
    update("disk", url(good), good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    auto r = result_of("disk");
    CHECK(r.at("status") == "refused");
    CHECK_THAT(std::string(r.at("error").as_string()), Catch::Contains("the 5 GB rule"));
    CHECK_FALSE(served());
  }

  SECTION("refused after the download: a hash that is not the package's, a package that is not the agent's, one "
          "that would not fit; nothing kept, nothing installed") {
    auto agent = start();
    const std::string wrong(64, '0');
    update("hash", url(good), wrong, sign(dir, "release", "9.9.9", wrong));
    auto r = result_of("hash");
    CHECK(r.at("status") == "refused");
    CHECK(r.at("error").as_string() == fmt::format("sha256: the downloaded package's is {}, not {}", good.sha256, wrong));
    CHECK(served());
    update("foreign", url(foreign), foreign.sha256, sign(dir, "release", "9.9.9", foreign.sha256));
    CHECK(result_of("foreign").at("error") == "the package is other 9.9.9, not instanced 9.9.9");
    // A pre-signed URL's query is never shown.
    update("missing", url(good) + "-gone?sig=do-not-show", good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    auto missing = result_of("missing");
    CHECK(missing.at("status") == "failed");
    CHECK_THAT(std::string(missing.at("error").as_string()), Catch::Contains("the server answered 404"));
    CHECK(json::serialize(missing).find("do-not-show") == std::string::npos);
    CHECK(agent->log().find("do-not-show") == std::string::npos);
    // Over update.max_bytes (1 MiB): refused on its announced length.
    REQUIRE(run_command("head -c 2097152 /dev/urandom > " + (dir / "files/big.deb").string()).exit_code == 0);
    const std::string big_sha = run_command("sha256sum " + (dir / "files/big.deb").string()).output.substr(0, 64);
    update("big", url(Package{"big.deb", big_sha}), big_sha, sign(dir, "release", "9.9.9", big_sha));
    auto big = result_of("big");
    CHECK(big.at("status") == "refused");
    CHECK_THAT(std::string(big.at("error").as_string()), Catch::Contains("the package is 2MiB, over update.max_bytes (1MiB)"));
    agent.reset();
    auto crowded = start("1000000TiB");
    update("fit", url(good), good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    auto fit = result_of("fit");
    CHECK(fit.at("status") == "refused");
    CHECK_THAT(std::string(fit.at("error").as_string()), Catch::StartsWith("GET https://localhost:") &&
                                                             Catch::Contains("the update would not fit"));
    CHECK_FALSE(fs::exists(dir / "state/update/new.deb"));
    CHECK_FALSE(fs::exists(dir / "state/update/new.deb.part"));
    CHECK_FALSE(fs::exists(dir / "installer-args"));
  }

  SECTION("a good package: handed to the installer, one update at a time, its rollback reported as update_failed") {
    auto agent = start();
    update("good", url(good), good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    auto r = result_of("good");
    INFO(json::serialize(r));
    REQUIRE(r.at("status") == "ok");
    CHECK(r.at("result").at("to") == "9.9.9");
    CHECK(r.at("result").at("state") == "installing");
    REQUIRE(eventually([&] { return fs::exists(dir / "installer-args"); }));
    const std::string args = slurp(dir / "installer-args");
    CHECK_THAT(args, Catch::StartsWith((dir / "state/update").string() + " 9.9.9 "));
    CHECK(slurp(dir / "installed.deb") == slurp(dir / ("files/" + good.name)));
    // Meanwhile: one update at a time.
    update("second", url(good), good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    CHECK(result_of("second").at("status") == "refused");
    CHECK(ctl_update().exit_code == 1);
    dir.write("installer-go", "");
    auto failed = [&](const json::value& v) {
      return json::serialize(v.at("ws-test").at("recent_events")).find("\"update_failed\"") != std::string::npos;
    };
    REQUIRE(cp.wait(failed, 30s));
    const std::string events = json::serialize(cp.instances().at("ws-test").at("recent_events"));
    CHECK_THAT(events, Catch::Contains("the stand-in installer rolled it back"));
    auto shown = ctl_update();
    CHECK(shown.exit_code == 2);
    CHECK_THAT(shown.output, Catch::Contains("rolled_back") && Catch::Contains("the stand-in installer rolled it back"));
    // Reported once: the next agent reads the record (the summary below is published in
    // the same step as a report would be made) and does not report it again.
    agent.reset();
    auto again = start();
    REQUIRE(eventually([&] {
      return again->curl("http://localhost/v1/status").output.find("last update, from") != std::string::npos;
    }));
    const std::string log = again->log();
    std::size_t reports = 0;
    for (auto p = log.find("update to 9.9.9: rolled_back"); p != std::string::npos; p = log.find("update to 9.9.9: rolled_back", p + 1))
      ++reports;
    CHECK(reports == 1);
  }

  SECTION("an installer that ends without a verdict is started again, 3 times at most, then the update failed") {
    auto agent = start();
    dir.write("installer-dies", "");
    update("dies", url(good), good.sha256, sign(dir, "release", "9.9.9", good.sha256));
    REQUIRE(result_of("dies").at("status") == "ok");
    auto failed = [&](const json::value& v) {
      return json::serialize(v.at("ws-test").at("recent_events")).find("\"update_failed\"") != std::string::npos;
    };
    REQUIRE(cp.wait(failed, 30s));
    CHECK_THAT(json::serialize(cp.instances().at("ws-test").at("recent_events")),
               Catch::Contains("the installer ended 3 times without a verdict"));
    const std::string args = slurp(dir / "installer-args");
    CHECK(std::count(args.begin(), args.end(), '\n') == 3);
    auto status = json::parse(agent->curl("http://localhost/v1/update").output);
    CHECK(status.at("attempt").at("state") == "failed");
    CHECK(status.at("attempt").at("launches") == 3);
  }
}
