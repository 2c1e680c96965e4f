// The typed-configuration machinery: reads YAML documents into structs that declare their
// keys in visit() (config_schema.hpp), checks each value and each section, names every
// problem with its file, line, column and key, and writes the effective configuration
// back. It knows no section: the aggregate (agent/config) lists them.
#pragma once

#include <algorithm>
#include <concepts>
#include <filesystem>
#include <fmt/format.h>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>
#include <yaml-cpp/yaml.h>

#include "common/config_schema.hpp"
#include "common/result.hpp"
#include "common/secret.hpp"
#include "common/units.hpp"

namespace instanced::config_yaml {

// Collects every problem found while loading, each with its place.
// What reading one document found: its problems, and the keys it set.
struct Problems {
  std::string file;
  std::vector<std::string> lines;
  std::vector<std::string> assigned{};  // dotted paths of the values it set: where settings came from

  void add(const YAML::Mark& mark, std::string_view key, std::string_view message) {
    if (mark.is_null())
      lines.push_back(fmt::format("{}: {}: {}", file, key, message));
    else
      lines.push_back(fmt::format("{}:{}:{}: {}: {}", file, mark.line + 1, mark.column + 1, key, message));
  }
};

std::size_t edit_distance(std::string_view a, std::string_view b);

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

std::string type_name(const YAML::Node& n);
Result<std::string> scalar(const YAML::Node& n, std::string_view expected);

template <class T>
Result<T> decode(const YAML::Node& n);
template <>
Result<std::string> decode<std::string>(const YAML::Node& n);
template <>
Result<bool> decode<bool>(const YAML::Node& n);
template <>
Result<std::int64_t> decode<std::int64_t>(const YAML::Node& n);
template <>
Result<ByteSize> decode<ByteSize>(const YAML::Node& n);
template <>
Result<Duration> decode<Duration>(const YAML::Node& n);
template <>
Result<FileMode> decode<FileMode>(const YAML::Node& n);
template <>
Result<Secret> decode<Secret>(const YAML::Node& n);
template <>
Result<MultilineText> decode<MultilineText>(const YAML::Node& n);
template <>
Result<Threshold> decode<Threshold>(const YAML::Node& n);

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
      if (!good) return;
      out = std::move(*value);
      problems_.assigned.push_back(full);
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

// Applies one document (the text of one file) through `visit`, which hands the reader to
// the aggregate's visit(); problems are added to `problems`.
void apply_document(std::string_view text, Problems& problems, const std::function<void(Reader&)>& visit);
// The YAML of what `visit` writes, as one mapping.
std::string write_document(const std::function<void(Writer&)>& visit);

// The files a configuration was read from.
struct ConfigFiles {
  std::filesystem::path file;                  // the main file
  std::vector<std::filesystem::path> dropins;  // applied in this order
  std::string hash;                            // sha256 over the files' names and bytes
};

// One drop-in as it would be: `text` read in place of the file at `path` (added there when
// there is none), or, without text, the file left out. To check a change before writing it.
struct ReplacedDropin {
  std::filesystem::path path;  // FILE.d/NAME.yaml
  std::optional<std::string> text;
};

// Reads FILE, then FILE.d/*.yaml in name order, handing each file's text to `apply`. On
// failure the error lists every problem, one per line.
Result<ConfigFiles> read_config_files(const std::filesystem::path& file,
                                      const std::function<void(std::string_view text, Problems&)>& apply,
                                      const ReplacedDropin* replaced = nullptr);

}  // namespace instanced::config_yaml
