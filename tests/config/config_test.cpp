#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

#include "agent/config/config.hpp"
#include "common/config_yaml.hpp"
#include "tests/support/agent_process.hpp"

using namespace instanced;
using instanced::testing::TempDir;

namespace {
std::string data(const std::string& name) { return std::string(TEST_DATA_DIR) + "/config/" + name; }

std::string error_of(std::string_view yaml) {
  auto r = parse_config_text(yaml, "test.yaml");
  REQUIRE_FALSE(r.ok());
  return r.error().message;
}
}  // namespace

TEST_CASE("an empty file gives every default", "[config]") {
  auto r = parse_config_text("", "empty.yaml");
  REQUIRE(r.ok());
  const Config& c = *r;
  CHECK(c.instance.name.empty());
  CHECK(c.state_dir == "/var/lib/instanced");
  CHECK(c.log.level == LogLevel::info);
  CHECK(c.status.socket == "/run/instanced/status.sock");
  CHECK(c.status.group == "instanced-ops");
  CHECK(c.status.mode.value == 0660);
  CHECK(c.status.max_connections == 256);
  CHECK(c.status.max_header_bytes.bytes == 8192);
  CHECK(c.status.max_body_bytes.bytes == 65536);
  CHECK(c.status.request_timeout == std::chrono::seconds(10));
  CHECK(c.shutdown.timeout == std::chrono::seconds(20));
  CHECK_FALSE(c.debug.test_hooks);
  CHECK(c.control.endpoint.empty());
  CHECK(c.control.heartbeat_interval == std::chrono::seconds(10));
  CHECK(c.control.ping_interval == std::chrono::seconds(20));
  CHECK(c.control.backoff_max == std::chrono::minutes(5));
  CHECK(c.control.outbox_max_bytes.bytes == 64ULL << 20);
}

TEST_CASE("every documented key is read", "[config]") {
  auto r = load_config(data("full.yaml"));
  REQUIRE(r.ok());
  const Config& c = r->config;
  CHECK(c.instance.name == "ws-gpu-01");
  CHECK(c.state_dir == "/srv/instanced/state");
  CHECK(c.log.level == LogLevel::debug);
  CHECK(c.status.socket == "/run/custom/status.sock");
  CHECK(c.status.group == "wheel");
  CHECK(c.status.mode.value == 0600);
  CHECK(c.status.max_connections == 32);
  CHECK(c.status.max_header_bytes.bytes == 16 * 1024);
  CHECK(c.status.max_body_bytes.bytes == 1024 * 1024);
  CHECK(c.status.request_timeout == std::chrono::seconds(90));
  CHECK(c.shutdown.timeout == std::chrono::seconds(15));
  CHECK(c.debug.test_hooks);
  CHECK(c.control.endpoint == "wss://cp.example.net:8443/v1/agent");
  CHECK(c.control.insecure);
  CHECK(c.control.token_file == "/etc/custom/token");
  CHECK(c.control.ca_file == "/etc/custom/ca.pem");
  CHECK(c.control.heartbeat_interval == std::chrono::seconds(5));
  CHECK(c.control.ping_interval == std::chrono::seconds(7));
  CHECK(c.control.connect_timeout == std::chrono::seconds(3));
  CHECK(c.control.backoff_initial == std::chrono::seconds(2));
  CHECK(c.control.backoff_max == std::chrono::minutes(10));
  CHECK(c.control.backoff_reset_after == std::chrono::minutes(2));
  CHECK(c.control.initial_delay_max == std::chrono::seconds(1));
  CHECK(c.control.reconnect_spread == std::chrono::seconds(3));
  CHECK(c.control.max_message_bytes.bytes == 2u << 20);
  CHECK(c.control.max_json_depth == 16);
  CHECK(c.control.outbox_max_bytes.bytes == 1ULL << 30);
  CHECK(c.control.replay_per_second == 50);
  CHECK(r->hash.size() == 64);

  SECTION("the dump reads back to the same configuration") {
    auto again = parse_config_text(dump_config(c), "dump.yaml");
    REQUIRE(again.ok());
    CHECK(dump_config(*again) == dump_config(c));
    CHECK(again->status.request_timeout == c.status.request_timeout);
    CHECK(again->status.mode == c.status.mode);
  }
}

TEST_CASE("every error is reported with file, line, column and key", "[config]") {
  auto r = load_config(data("errors.yaml"));
  REQUIRE_FALSE(r.ok());
  const std::string& m = r.error().message;
  const std::string f = data("errors.yaml");
  CHECK_THAT(m, Catch::Contains(f + ":1:12: state_dir: 'relative/path' must be an absolute path"));
  CHECK_THAT(m, Catch::Contains(f + ":3:3: log.levle: unknown key; did you mean 'level'?"));
  CHECK_THAT(m, Catch::Contains(f + ":5:20: status.max_connections: expected an integer, got 'lots'"));
  CHECK_THAT(m, Catch::Contains(f + ":6:20: status.request_timeout: duration '30' needs a unit"));
  CHECK_THAT(m, Catch::Contains(f + ":7:21: status.max_header_bytes: invalid size unit 'parsecs'"));
  CHECK_THAT(m, Catch::Contains(f + ":8:9: status.mode: expected an octal mode such as 0660, got '0999'"));
  CHECK_THAT(m, Catch::Contains(f + ":10:12: shutdown.timeout: 1h is out of range [100ms, 5m]"));
  CHECK_THAT(m, Catch::Contains(f + ":11:8: debug: expected a mapping, got a list"));
}

TEST_CASE("error classes", "[config]") {
  SECTION("syntax") {
    CHECK_THAT(error_of("status:\n  socket: [unclosed\n"), Catch::StartsWith("test.yaml:") && Catch::Contains("(syntax)"));
  }
  SECTION("type") {
    CHECK_THAT(error_of("debug:\n  test_hooks: maybe\n"),
               Catch::Contains("test.yaml:2:15: debug.test_hooks: expected true or false, got 'maybe'"));
    CHECK_THAT(error_of("status: 5\n"), Catch::Contains("test.yaml:1:9: status: expected a mapping, got '5'"));
    CHECK_THAT(error_of("- a\n- b\n"), Catch::Contains("(top level): expected a mapping, got a list"));
  }
  SECTION("range") {
    CHECK_THAT(error_of("status:\n  max_connections: 0\n"),
               Catch::Contains("test.yaml:2:20: status.max_connections: 0 is out of range [1, 10000]"));
    CHECK_THAT(error_of("status:\n  max_header_bytes: 2MiB\n"), Catch::Contains("2MiB is out of range [512B, 1MiB]"));
  }
  SECTION("proxy URLs: http only, no user or password in them, the value never repeated") {
    auto e = error_of("proxy:\n  url: http://alice:s3cret-pass@proxy.corp:3128\n");
    CHECK_THAT(e, Catch::Contains("test.yaml:2:8: proxy.url: a user or password in the URL is not allowed: put them in "
                                  "proxy.credentials_file"));
    CHECK(e.find("s3cret-pass") == std::string::npos);
    CHECK_THAT(error_of("control:\n  proxy: alice:pw@proxy.corp:3128\n"),
               Catch::Contains("control.proxy: a user or password in the URL is not allowed"));
    CHECK_THAT(error_of("proxy:\n  url: socks5://proxy.corp:1080\n"),
               Catch::Contains("proxy.url: 'socks5://…': only http:// proxies are supported"));
    auto ok = parse_config_text("proxy:\n  url: proxy.corp:3128\n  no_proxy: [.corp]\n", "t.yaml");
    REQUIRE(ok.ok());
    CHECK(ok->proxy.url == "proxy.corp:3128");
  }
  SECTION("percentages: a plain decimal from 0 to 100, the same under every C++ library") {
    auto pct = [](const std::string& v) {
      return parse_config_text("disk:\n  paths:\n    - path: /\n      inodes_low: " + v + "\n", "t.yaml");
    };
    auto ok = pct("7.5%");
    REQUIRE(ok.ok());
    CHECK(ok->disk.paths.at(0).inodes_low.percent == Approx(7.5));
    CHECK(pct(".5%").ok());
    CHECK(pct("100%").ok());
    for (const char* bad : {"nan%", "inf%", "1e1%", "-0%", "100.5%", ".%", "1.2.3%", "5 %", "\"%\""})
      CHECK_THAT(error_of(std::string("disk:\n  paths:\n    - path: /\n      inodes_low: ") + bad + "\n"),
                 Catch::Contains("expected a percentage from 0% to 100%"));
  }
  SECTION("enum") {
    CHECK_THAT(error_of("log:\n  level: loud\n"),
               Catch::Contains("test.yaml:2:10: log.level: 'loud' is not one of: trace, debug, info, warn, error"));
  }
  SECTION("text values must be UTF-8 without control characters") {
    CHECK_THAT(error_of("instance:\n  name: \"ws\\x11\"\n"),
               Catch::Contains("test.yaml:2:9: instance.name: contains control character 0x11 at byte 2"));
    CHECK_THAT(error_of("instance:\n  name: ws-\xff\xfe\n"), Catch::Contains("instance.name: is not valid UTF-8 (byte 3)"));
    CHECK(parse_config_text("instance:\n  name: Arbeitsplatz-Müller-🚀\n", "t.yaml").ok());
  }
  SECTION("unknown key far from every known one lists the known keys") {
    CHECK_THAT(error_of("zzzzzzzz: 1\n"), Catch::Contains("zzzzzzzz: unknown key; known keys here: instance, state_dir"));
  }
  SECTION("unknown top-level key close to a known one") {
    CHECK_THAT(error_of("stat_dir: /x\n"), Catch::Contains("test.yaml:1:1: stat_dir: unknown key; did you mean 'state_dir'?"));
  }
  SECTION("several problems are all reported") {
    auto m = error_of("log:\n  level: x\nstatus:\n  group: ''\n");
    CHECK_THAT(m, Catch::Contains("log.level") && Catch::Contains("status.group: must not be empty"));
  }
  SECTION("a missing file names the file") {
    auto r = load_config("/nonexistent/instanced.yaml");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains("/nonexistent/instanced.yaml: cannot open: No such file or directory"));
  }
}

TEST_CASE("files that are not regular files are refused by name, never read without bound or waited on", "[config][hostile]") {
  TempDir dir;
  dir.write("instanced.yaml", "log:\n  level: warn\n");
  const auto d = dir / "instanced.yaml.d";
  std::filesystem::create_directories(d);
  auto refused = [&](const std::string& what) {
    auto r = load_config(dir / "instanced.yaml");
    REQUIRE_FALSE(r.ok());
    CHECK_THAT(r.error().message, Catch::Contains(what));
  };
  SECTION("a symbolic link loop") {
    std::filesystem::create_symlink(d / "loop.yaml", d / "loop.yaml");
    refused((d / "loop.yaml").string() + ": cannot open: Too many levels of symbolic links");
  }
  SECTION("a link to /dev/zero") {
    std::filesystem::create_symlink("/dev/zero", d / "zero.yaml");
    refused((d / "zero.yaml").string() + ": not a regular file (a character device)");
  }
  SECTION("a FIFO, with no writer") {
    REQUIRE(::mkfifo((d / "fifo.yaml").c_str(), 0644) == 0);
    refused((d / "fifo.yaml").string() + ": not a regular file (a FIFO)");
  }
  SECTION("a directory named like a drop-in") {
    std::filesystem::create_directories(d / "x.yaml");
    refused((d / "x.yaml").string() + ": not a regular file (a directory)");
  }
  SECTION("a file larger than 1 MiB") {
    dir.write("instanced.yaml.d/big.yaml", "# " + std::string(1 << 20, 'x') + "\n");
    refused((d / "big.yaml").string() + ": larger than 1048576 bytes");
  }
  SECTION("a drop-in folder that is a symbolic link loop") {
    std::filesystem::remove_all(d);
    std::filesystem::create_symlink(d, d);
    refused(d.string() + ": cannot open: Too many levels of symbolic links");
  }
  SECTION("a drop-in folder that is a file") {
    std::filesystem::remove_all(d);
    dir.write("instanced.yaml.d", "log:\n  level: debug\n");
    refused(d.string() + ": not a directory (a regular file)");
  }
  SECTION("the main file itself") {
    std::filesystem::remove(dir / "instanced.yaml");
    REQUIRE(::mkfifo((dir / "instanced.yaml").c_str(), 0644) == 0);
    refused((dir / "instanced.yaml").string() + ": not a regular file (a FIFO)");
  }
}

TEST_CASE("a duplicate key and a second document are errors with their place", "[config][hostile]") {
  CHECK_THAT(error_of("log:\n  level: warn\n  level: debug\n"),
             Catch::Contains("test.yaml:3:3: log.level: duplicate key (first at line 2)"));
  CHECK_THAT(error_of("state_dir: /a\nlog:\n  level: warn\nstate_dir: /b\n"),
             Catch::Contains("test.yaml:4:1: state_dir: duplicate key (first at line 1)"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /bin/true\n      name: b\n"),
             Catch::Contains("test.yaml:5:7: setup.scripts[0].name: duplicate key (first at line 3)"));
  CHECK_THAT(error_of("log:\n  level: warn\n---\nlog:\n  level: debug\n"),
             Catch::Contains("test.yaml:3:1: (document 2): a second YAML document; a configuration file holds one"));
  CHECK(parse_config_text("---\nlog:\n  level: warn\n", "t.yaml").ok());  // one document, marked
  CHECK(parse_config_text("%YAML 1.2\n---\nlog:\n  level: warn\n...\n# the end\n", "t.yaml").ok());
  CHECK_THAT(error_of("log:\n  level: warn\n...\nstate_dir: /x\n"),
             Catch::Contains("test.yaml:4:1: (document 2): a second YAML document"));
}

TEST_CASE("drop-in files override in name order", "[config]") {
  TempDir dir;
  dir.write("instanced.yaml", "log:\n  level: warn\nstatus:\n  max_connections: 10\n  group: ops\n");
  dir.write("instanced.yaml.d/20-later.yaml", "status:\n  max_connections: 30\n");
  dir.write("instanced.yaml.d/10-first.yaml", "status:\n  max_connections: 20\nlog:\n  level: debug\n");
  dir.write("instanced.yaml.d/ignored.txt", "not: yaml: at all: [");
  auto r = load_config(dir / "instanced.yaml");
  REQUIRE(r.ok());
  CHECK(r->config.status.max_connections == 30);  // 20-later wins over 10-first
  CHECK(r->config.log.level == LogLevel::debug);   // set only by 10-first
  CHECK(r->config.status.group == "ops");          // set only by the main file
  REQUIRE(r->dropins.size() == 2);
  CHECK(r->dropins[0].filename() == "10-first.yaml");

  SECTION("an error in a drop-in names the drop-in") {
    dir.write("instanced.yaml.d/30-bad.yaml", "\nstatus:\n  max_conections: 5\n");
    auto bad = load_config(dir / "instanced.yaml");
    REQUIRE_FALSE(bad.ok());
    CHECK_THAT(bad.error().message,
               Catch::Contains((dir / "instanced.yaml.d/30-bad.yaml").string() +
                               ":3:3: status.max_conections: unknown key; did you mean 'max_connections'?"));
  }
  SECTION("each key a file set is remembered with that file, a replaced list without its earlier items") {
    const std::string main = (dir / "instanced.yaml").string(), first = (dir / "instanced.yaml.d/10-first.yaml").string(),
                      later = (dir / "instanced.yaml.d/20-later.yaml").string();
    CHECK(r->origins == std::map<std::string, std::filesystem::path>{{"log.level", first},
                                                                     {"status.group", main},
                                                                     {"status.max_connections", later}});
    dir.write("instanced.yaml", "setup:\n  scripts:\n    - {name: a, path: /a.sh}\n    - {name: b, path: /b.sh, timeout: 1m}\n");
    dir.write("instanced.yaml.d/20-later.yaml", "setup:\n  scripts:\n    - {name: c, path: /c.sh}\n");
    auto lists = load_config(dir / "instanced.yaml");
    REQUIRE(lists.ok());
    REQUIRE(lists->config.setup.scripts.size() == 1);
    CHECK(lists->origins == std::map<std::string, std::filesystem::path>{{"log.level", first},
                                                                         {"setup.scripts", later},
                                                                         {"setup.scripts[0].name", later},
                                                                         {"setup.scripts[0].path", later},
                                                                         {"status.max_connections", first}});
  }
  SECTION("a drop-in checked as it would be, before it is written (set_config)") {
    const auto pushed = dir / "instanced.yaml.d/90-control-plane.yaml";
    const config_yaml::ReplacedDropin added{pushed, "status:\n  max_connections: 40\n"};
    auto with = load_config(dir / "instanced.yaml", &added);
    REQUIRE(with.ok());
    CHECK(with->config.status.max_connections == 40);  // read last, after 20-later
    CHECK(with->origins.at("status.max_connections") == pushed);
    CHECK_FALSE(std::filesystem::exists(pushed));  // nothing written
    const config_yaml::ReplacedDropin bad{pushed, "status:\n\n  max_connections: lots\n"};
    auto refused = load_config(dir / "instanced.yaml", &bad);
    REQUIRE_FALSE(refused.ok());
    CHECK_THAT(refused.error().message, Catch::StartsWith(pushed.string() + ":3:20: status.max_connections:"));
    const config_yaml::ReplacedDropin removed{dir / "instanced.yaml.d/20-later.yaml", std::nullopt};
    auto without = load_config(dir / "instanced.yaml", &removed);
    REQUIRE(without.ok());
    CHECK(without->config.status.max_connections == 20);
    CHECK(without->dropins.size() == 1);
    CHECK(without->hash != r->hash);
  }
  SECTION("the hash changes when a drop-in changes") {
    dir.write("instanced.yaml.d/20-later.yaml", "status:\n  max_connections: 31\n");
    auto changed = load_config(dir / "instanced.yaml");
    REQUIRE(changed.ok());
    CHECK(changed->hash != r->hash);
  }
}

TEST_CASE("the dump shows the effective configuration", "[config]") {
  auto r = parse_config_text("status:\n  request_timeout: 90s\n  max_body_bytes: 1048576\n", "t.yaml");
  REQUIRE(r.ok());
  auto dump = dump_config(*r);
  CHECK_THAT(dump, Catch::Contains("request_timeout: 90s"));
  CHECK_THAT(dump, Catch::Contains("max_body_bytes: 1MiB"));
  CHECK_THAT(dump, Catch::Contains("mode: 0660"));
}

TEST_CASE("setup scripts: a list of sections, with lists and mappings inside", "[config][setup]") {
  auto r = parse_config_text(R"(
setup:
  max_log_bytes: 1MiB
  scripts:
    - name: conda-env
      when: create
      path: /opt/setup/conda.sh
      args: [--quiet, "two words"]
      environment: {CONDA_DIR: /opt/conda, MODE: fast}
      timeout: 5m
    - name: kernels
      content: |
        #!/bin/bash
        echo	tabbed
      user: azureuser
      continue_on_error: true
      leftover_processes: kill
)", "t.yaml");
  REQUIRE(r.ok());
  const auto& s = r->setup.scripts;
  REQUIRE(s.size() == 2);
  CHECK(s[0].when == ScriptWhen::create);
  CHECK(s[0].args == std::vector<std::string>{"--quiet", "two words"});
  CHECK(s[0].environment.at("CONDA_DIR") == "/opt/conda");
  CHECK(s[0].timeout == std::chrono::minutes(5));
  CHECK(s[1].when == ScriptWhen::start);
  CHECK(s[1].content.value == "#!/bin/bash\necho\ttabbed\n");
  CHECK(s[1].leftover_processes == Leftovers::kill);
  CHECK(r->setup.max_log_bytes.bytes == 1 << 20);
  // The dump reads back to the same scripts.
  auto again = parse_config_text(dump_config(*r), "dump.yaml");
  REQUIRE(again.ok());
  CHECK(again->setup.scripts[1].content == s[1].content);
  CHECK(again->setup.scripts[0].environment == s[0].environment);
}

TEST_CASE("setup scripts: each mistake named with its place", "[config][setup]") {
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n      when: boot\n"),
             Catch::Contains("test.yaml:5:13: setup.scripts[0].when: 'boot' is not one of: create, start"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n      content: echo\n"),
             Catch::Contains("test.yaml:3:7: setup.scripts[0]: script 'a': set exactly one of 'path' and 'content'"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n    - name: a\n      path: /y\n"),
             Catch::Contains("setup: scripts[1]: 'a' is already used by scripts[0]"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a/b\n      path: /x\n"),
             Catch::Contains("setup.scripts[0].name: 'a/b' may contain only letters, digits"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n      environment: {INSTANCED_X: 1}\n"),
             Catch::Contains("names starting with INSTANCED_ are set by the agent"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n      environment: {1X: 1}\n"),
             Catch::Contains("'1X' is not a valid environment variable name"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      path: /x\n      tiemout: 1s\n"),
             Catch::Contains("setup.scripts[0].tiemout: unknown key; did you mean 'timeout'?"));
  CHECK_THAT(error_of("setup:\n  scripts: {name: a}\n"), Catch::Contains("setup.scripts: expected a list, got a mapping"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - just-a-string\n"),
             Catch::Contains("setup.scripts[0]: expected a mapping, got 'just-a-string'"));
  CHECK_THAT(error_of("setup:\n  scripts:\n    - name: a\n      content: \"bad\\u0001\"\n"),
             Catch::Contains("setup.scripts[0].content: contains control character 0x01"));
}

TEST_CASE("workstation services: each mistake named with its place", "[config][workstation]") {
  CHECK_THAT(error_of("applications:\n  apps:\n    - name: j\n      url: http://10.0.0.5:8888/api/status\n"),
             Catch::Contains("applications.apps[0]: url: 'http://10.0.0.5:8888/api/status' must name 127.0.0.1, ::1 or localhost"));
  // The token itself is not repeated in the message.
  auto token = error_of("applications:\n  apps:\n    - name: j\n      url: http://127.0.0.1:8888/api/status?token=s3cret\n");
  CHECK_THAT(token, Catch::Contains("applications.apps[0]: url: a token in the URL would be shown in status and logs; use token_file"));
  CHECK_THAT(token, !Catch::Contains("s3cret"));
  CHECK_THAT(error_of("applications:\n  apps:\n    - name: j\n      process: jupyter\n      restart: true\n"),
             Catch::Contains("app 'j': restart needs 'unit' (restarts go through systemd)"));
  CHECK_THAT(error_of("applications:\n  apps:\n    - name: j\n      process: jupyter\n      websocket: wss://127.0.0.1:1/x\n"),
             Catch::Contains("websocket: 'wss://127.0.0.1:1/x' must be a ws:// URL"));
  CHECK_THAT(error_of("schedule:\n  stop: [\"0 19 * * 1-5\", \"0 25 * * *\"]\n"),
             Catch::Contains("schedule: stop[1]: field 2 (hour): '25' is out of range 0-23"));
  CHECK_THAT(error_of("schedule:\n  time_zone: Europe/Atlantis\n"),
             Catch::Contains("schedule: time_zone: time zone 'Europe/Atlantis': /usr/share/zoneinfo/Europe/Atlantis: cannot open: No such file or directory"));
  CHECK_THAT(error_of("ssh:\n  policy: sometimes\n"),
             Catch::Contains("ssh.policy: 'sometimes' is not one of: unmanaged, enabled, disabled"));
}
