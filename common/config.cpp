#include "common/config.hpp"

#include "common/cron.hpp"
#include "common/url.hpp"

#include <algorithm>
#include <charconv>
#include <cstring>
#include <fmt/format.h>
#include <sys/stat.h>
#include <map>
#include <openssl/sha.h>
#include <system_error>
#include <optional>
#include <type_traits>
#include <yaml-cpp/yaml.h>

#include "common/fs.hpp"
#include "common/secret.hpp"

namespace instanced {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t kMaxConfigFileBytes = 1 << 20;  // the annotated default file is ~20 KiB
constexpr std::size_t kMaxDropins = 1000;

// Collects every problem found while loading, each with its place.
struct Problems {
  std::string file;
  std::vector<std::string> lines;

  void add(const YAML::Mark& mark, std::string_view key, std::string_view message) {
    if (mark.is_null())
      lines.push_back(fmt::format("{}: {}: {}", file, key, message));
    else
      lines.push_back(fmt::format("{}:{}:{}: {}: {}", file, mark.line + 1, mark.column + 1, key, message));
  }
};

std::size_t edit_distance(std::string_view a, std::string_view b) {
  std::vector<std::size_t> row(b.size() + 1);
  for (std::size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (std::size_t i = 1; i <= a.size(); ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= b.size(); ++j) {
      std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}

// Lists (of scalars or of sections) and string-to-string mappings (environments).
template <class T>
struct is_vector : std::false_type {};
template <class T>
struct is_vector<std::vector<T>> : std::true_type {};
template <class T>
constexpr bool is_vector_v = is_vector<T>::value;
template <class T>
constexpr bool is_string_map_v = std::is_same_v<T, std::map<std::string, std::string>>;

// A section is a struct with its own visit(); everything else is a scalar with a decoder.
template <class T>
constexpr bool is_section_v = std::is_class_v<T> && !std::is_same_v<T, std::string> &&
                              !std::is_same_v<T, ByteSize> && !std::is_same_v<T, Duration> &&
                              !std::is_same_v<T, FileMode> && !std::is_same_v<T, Secret> &&
                              !std::is_same_v<T, MultilineText> && !std::is_same_v<T, Threshold> && !is_vector_v<T> && !is_string_map_v<T>;

// A section may check its fields together (exactly one of two keys, say).
template <class T>
concept HasValidate = requires(const T& t) {
  { t.validate() } -> std::same_as<std::optional<std::string>>;
};

template <class T>
concept IsEnum = std::is_enum_v<T>;

// ---- decoding scalars ------------------------------------------------------------------

std::string type_name(const YAML::Node& n) {
  switch (n.Type()) {
    case YAML::NodeType::Null: return "nothing";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Map: return "a mapping";
    default: return fmt::format("'{}'", n.Scalar());
  }
}

Result<std::string> scalar(const YAML::Node& n, std::string_view expected) {
  if (!n.IsScalar()) return Error{fmt::format("expected {}, got {}", expected, type_name(n))};
  return n.Scalar();
}

template <class T>
Result<T> decode(const YAML::Node& n);

// Names, paths and groups: valid UTF-8 without control characters. Anything else is a
// typo or a corrupted file, and would not survive being written back (--check-config).
std::optional<std::string> text_problem(std::string_view s) {
  std::size_t i = 0;
  while (i < s.size()) {
    auto c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f) return fmt::format("contains control character 0x{:02x} at byte {}", c, i);
    std::size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    if (len == 0 || i + len > s.size()) return fmt::format("is not valid UTF-8 (byte {})", i);
    for (std::size_t k = 1; k < len; ++k)
      if ((static_cast<unsigned char>(s[i + k]) & 0xc0) != 0x80) return fmt::format("is not valid UTF-8 (byte {})", i);
    i += len;
  }
  return std::nullopt;
}

template <>
Result<std::string> decode<std::string>(const YAML::Node& n) {
  auto s = scalar(n, "a string");
  if (!s) return s;
  if (auto problem = text_problem(*s)) return Error{*problem};
  return s;
}

template <>
Result<bool> decode<bool>(const YAML::Node& n) {
  auto s = scalar(n, "true or false");
  if (!s) return s.error();
  if (*s == "true") return true;
  if (*s == "false") return false;
  return Error{fmt::format("expected true or false, got '{}'", *s)};
}

template <>
Result<std::int64_t> decode<std::int64_t>(const YAML::Node& n) {
  auto s = scalar(n, "an integer");
  if (!s) return s.error();
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(s->data(), s->data() + s->size(), v);
  if (ec != std::errc() || ptr != s->data() + s->size())
    return Error{fmt::format("expected an integer, got '{}'", *s)};
  return v;
}

template <>
Result<ByteSize> decode<ByteSize>(const YAML::Node& n) {
  auto s = scalar(n, "a size such as 512MiB");
  if (!s) return s.error();
  return parse_size(*s);
}

template <>
Result<Duration> decode<Duration>(const YAML::Node& n) {
  auto s = scalar(n, "a duration such as 30s");
  if (!s) return s.error();
  return parse_duration(*s);
}

template <>
Result<FileMode> decode<FileMode>(const YAML::Node& n) {
  auto s = scalar(n, "an octal mode such as 0660");
  if (!s) return s.error();
  unsigned v = 0;
  auto [ptr, ec] = std::from_chars(s->data(), s->data() + s->size(), v, 8);
  if (s->empty() || ec != std::errc() || ptr != s->data() + s->size() || v > 07777)
    return Error{fmt::format("expected an octal mode such as 0660, got '{}'", *s)};
  return FileMode{v};
}

template <>
[[maybe_unused]] Result<Secret> decode<Secret>(const YAML::Node& n) {
  if (!n.IsScalar()) return Error{fmt::format("expected a string, got {}", type_name(n))};
  return Secret{n.Scalar()};
}

template <>
Result<MultilineText> decode<MultilineText>(const YAML::Node& n) {
  auto s = scalar(n, "text");
  if (!s) return s.error();
  std::string probe = *s;  // tabs and line ends are what makes it several lines
  for (char& c : probe)
    if (c == '\n' || c == '\t' || c == '\r') c = ' ';
  if (auto problem = text_problem(probe)) return Error{*problem};
  return MultilineText{std::move(*s)};
}

// A plain decimal number ("12", "7.5", ".5"): digits and at most one point, nothing else
// (no sign, exponent, "inf" or "nan"); the same in every locale and C++ library.
std::optional<double> parse_decimal(std::string_view s) {
  double whole = 0, scale = 1;
  bool point = false, digits = false;
  for (char c : s) {
    if (c == '.' && !point) {
      point = true;
    } else if (c >= '0' && c <= '9') {
      digits = true;
      if (point) scale /= 10;
      whole = whole * 10 + (c - '0');
    } else {
      return std::nullopt;
    }
  }
  if (!digits) return std::nullopt;
  return whole * scale;
}

template <>
Result<Threshold> decode<Threshold>(const YAML::Node& n) {
  auto s = scalar(n, "a size such as 5GiB or a percentage such as 10%");
  if (!s) return s.error();
  if (!s->empty() && s->back() == '%') {
    auto pct = parse_decimal(std::string_view(*s).substr(0, s->size() - 1));
    if (!pct || *pct > 100) return Error{fmt::format("expected a percentage from 0% to 100%, got '{}'", *s)};
    return Threshold{0, *pct};
  }
  auto size = parse_size(*s);
  if (!size) return Error{fmt::format("expected a size such as 5GiB or a percentage such as 10%, got '{}'", *s)};
  return Threshold{size->bytes, -1};
}

template <IsEnum E>
Result<E> decode_enum(const YAML::Node& n) {
  auto s = scalar(n, "one of the listed words");
  if (!s) return s.error();
  if (auto e = enum_from_name<E>(*s)) return *e;
  return Error{fmt::format("'{}' is not one of: {}", *s, fmt::join(EnumNames<E>::names, ", "))};
}

// ---- the reading visitor ---------------------------------------------------------------

class Reader {
 public:
  Reader(YAML::Node node, std::string path, Problems& problems)
      : node_(std::move(node)), path_(std::move(path)), problems_(problems) {}

  template <class T, class... Checks>
  void operator()(std::string_view key, T& out, Checks&&... checks) {
    known_.emplace_back(key);
    const YAML::Node& self = node_;
    YAML::Node child = self[std::string(key)];
    if (!child) return;
    std::string full = path_.empty() ? std::string(key) : fmt::format("{}.{}", path_, key);
    if constexpr (is_section_v<T>) {
      if (child.IsNull()) return;  // "log:" with nothing below keeps the defaults
      read_section(child, full, out);
    } else {
      Result<T> value = [&]() -> Result<T> {
        if constexpr (is_vector_v<T>)
          return read_list<typename T::value_type>(child, full);
        else if constexpr (is_string_map_v<T>)
          return read_string_map(child, full);
        else if constexpr (IsEnum<T>)
          return decode_enum<T>(child);
        else
          return decode<T>(child);
      }();
      if (!value) {
        if (!value.error().message.empty()) problems_.add(child.Mark(), full, value.error().message);
        return;
      }
      bool good = true;
      auto run = [&](auto& c) {
        if (!good) return;
        if (auto msg = c(*value)) {
          problems_.add(child.Mark(), full, *msg);
          good = false;
        }
      };
      (run(checks), ...);
      if (good) out = std::move(*value);
    }
  }

  // A section's keys, then its own cross-field check; false if anything was wrong.
  template <class S>
  bool read_section(const YAML::Node& node, const std::string& full, S& out) {
    if (!node.IsMap()) {
      problems_.add(node.Mark(), full, fmt::format("expected a mapping, got {}", type_name(node)));
      return false;
    }
    std::size_t before = problems_.lines.size();
    Reader nested(node, full, problems_);
    out.visit(nested);
    nested.finish();
    if constexpr (HasValidate<S>)
      if (problems_.lines.size() == before)
        if (auto msg = out.validate()) problems_.add(node.Mark(), full, *msg);
    return problems_.lines.size() == before;
  }

  // A list replaces the default (and an earlier file's list) whole. "key:" with nothing
  // below is the empty list. Problems of items are reported per item ("key[2].field");
  // an empty error message means "already reported".
  template <class E>
  Result<std::vector<E>> read_list(const YAML::Node& node, const std::string& full) {
    std::vector<E> items;
    if (node.IsNull()) return items;
    if (!node.IsSequence()) return Error{fmt::format("expected a list, got {}", type_name(node))};
    bool good = true;
    for (std::size_t i = 0; i < node.size(); ++i) {
      const YAML::Node& item = node[i];
      std::string at = fmt::format("{}[{}]", full, i);
      E e{};
      if constexpr (is_section_v<E>) {
        good = read_section(item, at, e) && good;
      } else {
        auto v = decode<E>(item);
        if (!v) {
          problems_.add(item.Mark(), at, v.error().message);
          good = false;
          continue;
        }
        e = std::move(*v);
      }
      items.push_back(std::move(e));
    }
    if (!good) return Error{""};
    return items;
  }

  Result<std::map<std::string, std::string>> read_string_map(const YAML::Node& node, const std::string& full) {
    std::map<std::string, std::string> out;
    if (node.IsNull()) return out;
    if (!node.IsMap()) return Error{fmt::format("expected a mapping, got {}", type_name(node))};
    bool good = true;
    for (const auto& kv : node) {
      auto k = decode<std::string>(kv.first);
      if (!k) {
        problems_.add(kv.first.Mark(), full, "key " + k.error().message);
        good = false;
        continue;
      }
      auto v = decode<std::string>(kv.second);
      if (!v) {
        problems_.add(kv.second.Mark(), fmt::format("{}.{}", full, *k), v.error().message);
        good = false;
        continue;
      }
      out[*k] = *v;
    }
    if (!good) return Error{""};
    return out;
  }

  void finish() {
    for (const auto& kv : node_) {
      std::string key = kv.first.IsScalar() ? kv.first.Scalar() : std::string("?");
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      std::string full = path_.empty() ? key : fmt::format("{}.{}", path_, key);
      std::string best;
      std::size_t best_d = SIZE_MAX;
      for (const auto& k : known_) {
        auto d = edit_distance(key, k);
        if (d < best_d) best_d = d, best = k;
      }
      std::size_t limit = std::max<std::size_t>(2, key.size() / 3);
      std::string hint = best_d <= limit ? fmt::format("; did you mean '{}'?", best)
                                         : fmt::format("; known keys here: {}", fmt::join(known_, ", "));
      problems_.add(kv.first.Mark(), full, "unknown key" + hint);
    }
  }

 private:
  YAML::Node node_;
  std::string path_;
  Problems& problems_;
  std::vector<std::string> known_;
};

// ---- the writing visitor (effective config dump) ---------------------------------------

class Writer {
 public:
  explicit Writer(YAML::Emitter& out) : out_(out) {}

  template <class T, class... Checks>
  void operator()(std::string_view key, T& value, Checks&&...) {
    out_ << YAML::Key << std::string(key) << YAML::Value;
    write(value);
  }

 private:
  template <class T>
  void write(T& value) {
    if constexpr (is_section_v<T>) {
      out_ << YAML::BeginMap;
      value.visit(*this);
      out_ << YAML::EndMap;
    } else if constexpr (is_vector_v<T>) {
      out_ << YAML::BeginSeq;
      for (auto& item : value) write(item);
      out_ << YAML::EndSeq;
    } else if constexpr (is_string_map_v<T>) {
      out_ << YAML::BeginMap;
      for (auto& [k, v] : value) out_ << YAML::Key << k << YAML::Value << v;
      out_ << YAML::EndMap;
    } else if constexpr (IsEnum<T>) {
      out_ << std::string(EnumNames<T>::names[static_cast<std::size_t>(value)]);
    } else if constexpr (std::is_same_v<T, bool>) {
      out_ << (value ? "true" : "false");
    } else if constexpr (std::is_same_v<T, ByteSize>) {
      out_ << format_size(value);
    } else if constexpr (std::is_same_v<T, Duration>) {
      out_ << format_duration(value);
    } else if constexpr (std::is_same_v<T, FileMode>) {
      out_ << fmt::format("{:04o}", value.value);
    } else if constexpr (std::is_same_v<T, Secret>) {
      out_ << (value.empty() ? "" : Secret::kRedacted);
    } else if constexpr (std::is_same_v<T, Threshold>) {
      out_ << (value.is_percent() ? fmt::format("{}%", value.percent) : format_size(ByteSize{value.bytes}));
    } else if constexpr (std::is_same_v<T, MultilineText>) {
      if (value.value.find('\n') != std::string::npos)
        out_ << YAML::Literal << value.value;
      else
        out_ << value.value;
    } else {
      out_ << value;
    }
  }

  YAML::Emitter& out_;
};

constexpr int kMaxDepth = 64;  // deeper than any key of the configuration

// yaml-cpp keeps every pair of a mapping and answers lookups with the first: a second
// `level:` would be ignored without a word. Each one is named with where the first was.
void find_duplicate_keys(const YAML::Node& node, const std::string& where, Problems& problems, int depth) {
  if (depth > kMaxDepth) return;
  if (node.IsSequence()) {
    for (std::size_t i = 0; i < node.size(); ++i)
      find_duplicate_keys(node[i], fmt::format("{}[{}]", where, i), problems, depth + 1);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, YAML::Mark> seen;
  for (const auto& pair : node) {
    std::string key = pair.first.IsScalar() ? pair.first.Scalar() : "?";
    std::string path = where.empty() ? key : where + "." + key;
    if (pair.first.IsScalar()) {
      auto [first, fresh] = seen.emplace(key, pair.first.Mark());
      if (!fresh) problems.add(pair.first.Mark(), path, fmt::format("duplicate key (first at line {})", first->second.line + 1));
    }
    find_duplicate_keys(pair.second, path, problems, depth + 1);
  }
}

bool is_marker(std::string_view line, std::string_view marker) {
  return line.starts_with(marker) &&
         (line.size() == 3 || line[3] == ' ' || line[3] == '\t' || line[3] == '\r' || line[3] == '#');
}

// The line where a second document starts ("---" after content or a first "---", or
// content after "..."), if any. Read from the text: yaml-cpp 0.7's LoadAll can loop without
// end on malformed input (config_fuzz found one), and a "---" at a line's start is a
// document marker wherever it stands.
std::optional<int> second_document_line(std::string_view text) {
  bool started = false, ended = false;
  int n = 0;
  for (std::size_t pos = 0; pos < text.size();) {
    std::size_t end = text.find('\n', pos);
    std::string_view line = text.substr(pos, end == std::string_view::npos ? std::string_view::npos : end - pos);
    pos = end == std::string_view::npos ? text.size() : end + 1;
    ++n;
    if (is_marker(line, "---")) {
      if (started || ended) return n;
      started = true;
    } else if (is_marker(line, "...")) {
      ended = true;
    } else if (auto first = line.find_first_not_of(" \t\r"); first != std::string_view::npos && line[first] != '#' &&
                                                                 line[first] != '%') {
      if (ended) return n;
      started = true;
    }
  }
  return std::nullopt;
}

// The one document of a file: a second one ("---") is an error, not silently ignored.
std::optional<YAML::Node> parse_document(std::string_view text, Problems& problems) {
  YAML::Node root;
  try {
    root = YAML::Load(std::string(text));
  } catch (const YAML::Exception& e) {
    problems.add(e.mark, "(syntax)", e.msg);
    return std::nullopt;
  }
  if (auto line = second_document_line(text)) {
    YAML::Mark mark;
    mark.line = *line - 1;
    mark.column = 0;
    problems.add(mark, "(document 2)", "a second YAML document; a configuration file holds one");
    return std::nullopt;
  }
  return root;
}

// Applies one document on top of `config`; problems are added to `problems`.
void apply_text(std::string_view text, Config& config, Problems& problems) {
  auto parsed = parse_document(text, problems);
  if (!parsed) return;
  const YAML::Node& root = *parsed;
  if (root.IsNull()) return;  // an empty file changes nothing
  if (!root.IsMap()) {
    problems.add(root.Mark(), "(top level)", fmt::format("expected a mapping, got {}", type_name(root)));
    return;
  }
  std::size_t before = problems.lines.size();
  find_duplicate_keys(root, "", problems, 0);
  if (problems.lines.size() > before) return;
  Reader reader(root, "", problems);
  config.visit(reader);
  reader.finish();
}

// OpenSSL's direct SHA-256 rather than EVP: EVP's first use initialises the provider
// machinery, which costs ~2 MiB of resident memory for one hash at start-up.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
std::string sha256_hex(std::string_view data) {
  // Not SHA256(): in OpenSSL 3 the one-shot goes through EVP too.
  unsigned char md[SHA256_DIGEST_LENGTH];
  SHA256_CTX ctx;
  SHA256_Init(&ctx);
  SHA256_Update(&ctx, data.data(), data.size());
  SHA256_Final(md, &ctx);
  std::string out;
  for (unsigned char b : md) out += fmt::format("{:02x}", b);
  return out;
}
#pragma GCC diagnostic pop

// "LIST[i]: 'KEY' is already used by LIST[j]" for the first item whose key repeats.
template <class T, class Key>
std::optional<std::string> first_repeat(const std::vector<T>& items, Key key, std::string_view list) {
  for (std::size_t i = 0; i < items.size(); ++i)
    for (std::size_t j = 0; j < i; ++j)
      if (key(items[i]) == key(items[j]))
        return fmt::format("{}[{}]: '{}' is already used by {}[{}]", list, i, key(items[i]), list, j);
  return std::nullopt;
}

}  // namespace

std::optional<std::string> ScriptConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  if (path.empty() == content.empty()) return fmt::format("script '{}': set exactly one of 'path' and 'content'", name);
  return std::nullopt;
}

std::optional<std::string> SetupConfig::validate() const {
  return first_repeat(scripts, [](const ScriptConfig& s) { return s.name; }, "scripts");
}

std::optional<std::string> JobsConfig::validate() const {
  if (default_timeout > max_timeout)
    return fmt::format("default_timeout: {} is longer than max_timeout ({})", format_duration(default_timeout),
                       format_duration(max_timeout));
  return std::nullopt;
}

std::optional<std::string> AppConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  if (url.empty() && process.empty() && unit.empty())
    return fmt::format("app '{}': set at least one of 'url', 'process' and 'unit' to look at", name);
  // Applications are probed on this machine only: a probe is not a way to reach elsewhere.
  auto local = [&](const std::string& key, const std::string& value, bool ws) -> std::optional<std::string> {
    if (value.empty()) return std::nullopt;
    auto u = parse_url(value);
    if (!u) return fmt::format("{}: {}", key, u.error().message);
    if (u->tls || (ws ? u->scheme != "ws" : u->scheme != "http"))
      return fmt::format("{}: '{}' must be a {}:// URL (applications are probed on this machine)", key, value,
                         ws ? "ws" : "http");
    if (u->host != "127.0.0.1" && u->host != "localhost" && u->host != "::1")
      return fmt::format("{}: '{}' must name 127.0.0.1, ::1 or localhost", key, value);
    // URLs are shown in /v1/apps and in messages: a secret has no place in them.
    if (auto q = u->target.find('?'); q != std::string::npos && u->target.find("token=", q) != std::string::npos)
      return fmt::format("{}: a token in the URL would be shown in status and logs; use token_file", key);
    return std::nullopt;
  };
  if (auto e = local("url", url, false)) return e;
  if (auto e = local("websocket", websocket, true)) return e;
  if (jupyter && url.empty()) return fmt::format("app '{}': jupyter needs 'url' (the server's /api/status)", name);
  if (restart && unit.empty()) return fmt::format("app '{}': restart needs 'unit' (restarts go through systemd)", name);
  return std::nullopt;
}

std::optional<std::string> AppsConfig::validate() const {
  if (slow > timeout)
    return fmt::format("slow: {} is longer than timeout ({})", format_duration(slow), format_duration(timeout));
  return first_repeat(apps, [](const AppConfig& a) { return a.name; }, "apps");
}

std::optional<std::string> ScheduleConfig::validate() const {
  if (auto parsed = cron::parse_schedules(time_zone, stop, start); !parsed) return parsed.error().message;
  if (warn_before.count() > 0 && (wall.empty() || wall.front().empty() || wall.front().front() != '/'))
    return std::string("wall: must start with an absolute path (or set warn_before: 0)");
  return std::nullopt;
}

std::optional<std::string> WatchedPath::validate() const {
  if (path.empty()) return std::string("path: must be set");
  return std::nullopt;
}

std::optional<std::string> DiskConfig::validate() const {
  if (auto repeat = first_repeat(paths, [](const WatchedPath& p) { return p.path; }, "paths")) return repeat;
  if (reboot_command.empty() || reboot_command.front().empty() || reboot_command.front().front() != '/')
    return std::string("reboot_command: must start with an absolute path");
  return std::nullopt;
}

namespace {

// Azure Storage naming rules (learn.microsoft.com: "Naming and referencing shares" and
// "... containers"): accounts 3-24 lowercase letters and digits; shares and containers
// 3-63 lowercase letters, digits and hyphens, starting with a letter or digit, every
// hyphen between two letters or digits.
std::optional<std::string> account_problem(const std::string& v) {
  if (v.size() < 3 || v.size() > 24) return fmt::format("'{}' must have 3 to 24 characters", v);
  for (char c : v)
    if (!(std::islower(static_cast<unsigned char>(c)) || std::isdigit(static_cast<unsigned char>(c))))
      return fmt::format("'{}' may contain only lowercase letters and digits", v);
  return std::nullopt;
}

std::optional<std::string> share_problem(const std::string& v) {
  if (v.size() < 3 || v.size() > 63) return fmt::format("'{}' must have 3 to 63 characters", v);
  for (std::size_t i = 0; i < v.size(); ++i) {
    unsigned char c = static_cast<unsigned char>(v[i]);
    bool alnum = std::islower(c) || std::isdigit(c);
    if (!alnum && c != '-') return fmt::format("'{}' may contain only lowercase letters, digits and hyphens", v);
    if (c == '-' && (i == 0 || i + 1 == v.size() || v[i - 1] == '-'))
      return fmt::format("'{}': a hyphen must be between two letters or digits", v);
  }
  return std::nullopt;
}

std::optional<std::string> mount_point_problem(const std::string& v) {
  if (v == "/") return std::string("must not be /");
  if (v.size() > 1 && v.back() == '/') return fmt::format("'{}' must not end with '/'", v);
  if (v.find("//") != std::string::npos || v.find("/./") != std::string::npos || v.find("/../") != std::string::npos ||
      v.ends_with("/.") || v.ends_with("/.."))
    return fmt::format("'{}' must be a normalised path (no '//', '.' or '..')", v);
  for (const char* system : {"/proc", "/sys", "/dev"})
    if (v == system || v.starts_with(std::string(system) + "/")) return fmt::format("'{}' is inside {}", v, system);
  return std::nullopt;
}

bool nested(const std::string& inner, const std::string& outer) {
  return inner == outer || inner.starts_with(outer + "/");
}

}  // namespace

std::optional<std::string> MountConfig::validate() const {
  if (name.empty()) return std::string("name: must be set");
  auto where = [this](std::string_view field, const std::string& msg) { return fmt::format("mount '{}': {}: {}", name, field, msg); };
  if (auto p = account_problem(account)) return where("account", *p);
  if (auto p = mount_point_problem(mount_point)) return where("mount_point", *p);
  int credentials = !key_file.empty() + !sas_file.empty() + managed_identity;
  if (type == MountType::azure_files) {
    if (share.empty()) return where("share", "must be set for type azure-files");
    if (auto p = share_problem(share)) return where("share", *p);
    if (!container.empty()) return where("container", "only for type blob (azure-files uses 'share')");
    if (key_file.empty()) return where("key_file", "must be set for type azure-files (SMB needs the account key)");
    if (!sas_file.empty() || managed_identity) return where("sas_file", "SAS and managed identity are for type blob only");
    if (smb_version != "3.1.1" && smb_version != "3.02" && smb_version != "3.0")
      return where("smb_version", fmt::format("'{}' must be 3.1.1, 3.02 or 3.0 (Azure Files needs SMB 3)", smb_version));
    if (!endpoint.empty()) {
      if (endpoint.find("://") != std::string::npos || endpoint.find('/') != std::string::npos)
        return where("endpoint", fmt::format("'{}' must be HOST or HOST:PORT for type azure-files", endpoint));
    }
  } else {
    if (container.empty()) return where("container", "must be set for type blob");
    if (container != "$root")
      if (auto p = share_problem(container)) return where("container", *p);
    if (!share.empty()) return where("share", "only for type azure-files (blob uses 'container')");
    if (credentials != 1) return where("key_file", "set exactly one of key_file, sas_file and managed_identity");
    if (!endpoint.empty() && !endpoint.starts_with("https://") && !endpoint.starts_with("http://"))
      return where("endpoint", fmt::format("'{}' must be an http:// or https:// URL for type blob", endpoint));
  }
  if (!managed_identity && (!identity_client_id.empty() || !identity_endpoint.empty()))
    return where("identity_client_id", "only with managed_identity: true");
  for (std::size_t i = 0; i < options.size(); ++i) {
    const auto& o = options[i];
    if (o.empty() || o.find_first_of(", \t\n") != std::string::npos)
      return where(fmt::format("options[{}]", i), fmt::format("'{}' must be one option without commas or spaces", o));
    for (const char* secret : {"password", "pass=", "credentials", "username", "user=", "sas", "key"})
      if (o.starts_with(secret))
        return where(fmt::format("options[{}]", i), "credentials must come from key_file or sas_file, never options");
  }
  return std::nullopt;
}

std::optional<std::string> StorageConfig::validate() const {
  if (auto r = first_repeat(mounts, [](const MountConfig& m) { return m.name; }, "mounts")) return r;
  if (auto r = first_repeat(mounts, [](const MountConfig& m) { return m.mount_point; }, "mounts")) return r;
  for (std::size_t i = 0; i < mounts.size(); ++i)
    for (std::size_t j = 0; j < mounts.size(); ++j)
      if (i != j && nested(mounts[i].mount_point, mounts[j].mount_point))
        return fmt::format("mounts[{}]: mount_point '{}' is inside mounts[{}]'s '{}'", i, mounts[i].mount_point, j,
                           mounts[j].mount_point);
  if (cache_dir == "/") return std::string("cache_dir: must not be / (the cache belongs on the temp disk, /mnt)");
  if (backoff_initial > backoff_max) return std::string("backoff_initial: must not be larger than backoff_max");
  if (slow_probe >= probe_timeout) return std::string("slow_probe: must be shorter than probe_timeout");
  return std::nullopt;
}

std::string_view to_string(LogLevel level) {
  return EnumNames<LogLevel>::names[static_cast<std::size_t>(level)];
}

Result<Config> parse_config_text(std::string_view text, std::string_view name) {
  Config config;
  Problems problems{std::string(name), {}};
  apply_text(text, config, problems);
  if (!problems.lines.empty()) return Error{fmt::format("{}", fmt::join(problems.lines, "\n"))};
  return config;
}

namespace {

// The *.yaml names in a drop-in folder, in name order, whatever kind of file each is (the
// reader refuses what is not a regular file, by name). No folder: none. A folder that is
// not one (a file, a symbolic link loop) is an error, never silently nothing.
Result<std::vector<fs::path>> list_dropins(const fs::path& dir) {
  struct stat st {};
  if (::stat(dir.c_str(), &st) != 0) {
    if (errno == ENOENT) return std::vector<fs::path>{};
    return Error{fmt::format("{}: cannot open: {}", dir.string(), std::strerror(errno))};
  }
  if (!S_ISDIR(st.st_mode)) return Error{fmt::format("{}: not a directory ({})", dir.string(), file_kind(st.st_mode))};
  std::vector<fs::path> files;
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec))
    if (it->path().extension() == ".yaml") files.push_back(it->path());
  if (ec) return Error{fmt::format("{}: cannot list: {}", dir.string(), ec.message())};
  if (files.size() > kMaxDropins)
    return Error{fmt::format("{}: {} drop-in files; at most {} are read", dir.string(), files.size(), kMaxDropins)};
  std::sort(files.begin(), files.end());
  return files;
}

}  // namespace

Result<LoadedConfig> load_config(const fs::path& file) {
  LoadedConfig loaded;
  loaded.file = file;
  std::vector<std::string> all_problems;
  std::string hash_input;

  auto apply_file = [&](const fs::path& path) -> bool {
    auto text = read_regular_file(path, kMaxConfigFileBytes);
    if (!text) {
      all_problems.push_back(text.error().message);
      return false;
    }
    hash_input += path.string();
    hash_input.push_back('\0');
    hash_input += *text;
    hash_input.push_back('\0');
    Problems problems{path.string(), {}};
    apply_text(*text, loaded.config, problems);
    all_problems.insert(all_problems.end(), problems.lines.begin(), problems.lines.end());
    return true;
  };

  if (!apply_file(file)) return Error{all_problems.front()};

  fs::path dropin_dir = file;
  dropin_dir += ".d";
  auto dropins = list_dropins(dropin_dir);
  if (!dropins) all_problems.push_back(dropins.error().message);
  for (const auto& f : dropins ? *dropins : std::vector<fs::path>{})
    if (apply_file(f)) loaded.dropins.push_back(f);
  if (!all_problems.empty()) return Error{fmt::format("{}", fmt::join(all_problems, "\n"))};
  loaded.hash = sha256_hex(hash_input);
  return loaded;
}

std::string dump_config(const Config& config) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Writer writer(out);
  Config copy = config;  // visit() is shared with the reader, so it takes a mutable object
  copy.visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace instanced
