#include "common/config_yaml.hpp"

#include <charconv>
#include <cstring>
#include <openssl/sha.h>
#include <sys/stat.h>
#include <system_error>

#include "common/fs.hpp"

namespace instanced::config_yaml {

namespace fs = std::filesystem;

namespace {

constexpr std::size_t kMaxConfigFileBytes = 1 << 20;  // the annotated default file is ~20 KiB
constexpr std::size_t kMaxDropins = 1000;

}  // namespace

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


// Names, paths and groups: valid UTF-8 without control characters. Anything else is a
// typo or a corrupted file, and would not survive being written back (--check-config).
static std::optional<std::string> text_problem(std::string_view s) {
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
Result<Secret> decode<Secret>(const YAML::Node& n) {
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
static std::optional<double> parse_decimal(std::string_view s) {
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

namespace {

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

void apply_document(std::string_view text, Problems& problems, const std::function<void(Reader&)>& visit) {
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
  visit(reader);
  reader.finish();
}

std::string write_document(const std::function<void(Writer&)>& visit) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  Writer writer(out);
  visit(writer);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

Result<ConfigFiles> read_config_files(const fs::path& file,
                                      const std::function<void(std::string_view text, Problems&)>& apply,
                                      const ReplacedDropin* replaced) {
  ConfigFiles files;
  files.file = file;
  std::vector<std::string> all_problems;
  std::string hash_input;

  auto apply_file = [&](const fs::path& path) -> bool {
    auto text = replaced && replaced->text && path == replaced->path ? Result<std::string>(*replaced->text)
                                                                     : read_regular_file(path, kMaxConfigFileBytes);
    if (!text) {
      all_problems.push_back(text.error().message);
      return false;
    }
    hash_input += path.string();
    hash_input.push_back('\0');
    hash_input += *text;
    hash_input.push_back('\0');
    Problems problems{path.string(), {}};
    apply(*text, problems);
    all_problems.insert(all_problems.end(), problems.lines.begin(), problems.lines.end());
    return true;
  };

  if (!apply_file(file)) return Error{all_problems.front()};

  fs::path dropin_dir = file;
  dropin_dir += ".d";
  auto dropins = list_dropins(dropin_dir);
  if (!dropins) all_problems.push_back(dropins.error().message);
  if (dropins && replaced) {
    std::erase(*dropins, replaced->path);
    if (replaced->text) dropins->insert(std::upper_bound(dropins->begin(), dropins->end(), replaced->path), replaced->path);
  }
  for (const auto& f : dropins ? *dropins : std::vector<fs::path>{})
    if (apply_file(f)) files.dropins.push_back(f);
  if (!all_problems.empty()) return Error{fmt::format("{}", fmt::join(all_problems, "\n"))};
  files.hash = sha256_hex(hash_input);
  return files;
}

}  // namespace instanced::config_yaml
