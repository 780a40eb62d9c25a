#include "framework/config.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <climits>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "framework/config_detail.h"
#include "framework/error.h"

namespace fs = std::filesystem;

namespace cachelab {

namespace config_detail {

// The file label of values given as CLI overrides.
const char* const kCommandLine = "<command line>";
// Longest bad value quoted verbatim in an error message.
const size_t kMaxQuotedValue = 60;

std::string join_path(const std::string& parent, const std::string& key) {
  return parent.empty() ? key : parent + "." + key;
}

// "exp.yaml:7", "<command line>" or "" (a node built in code).
std::string location(const ConfigNode& n) {
  if (n.file.empty()) return "";
  if (n.line <= 0) return n.file;
  return n.file + ":" + std::to_string(n.line);
}

// "exp.yaml:7: " -- the prefix of a one-paragraph error message.
std::string prefix(const ConfigNode& n) {
  std::string loc = location(n);
  return loc.empty() ? "" : loc + ": ";
}

std::string describe_kind(const ConfigNode& n) {
  switch (n.kind) {
    case ConfigNode::Kind::Null:
      return "nothing (null)";
    case ConfigNode::Kind::Map:
      return "a map";
    case ConfigNode::Kind::Seq:
      return "a list";
    case ConfigNode::Kind::Scalar:
      break;
  }
  std::string v = n.scalar;
  if (v.size() > kMaxQuotedValue) v = v.substr(0, kMaxQuotedValue) + "...";
  return "`" + v + "`";
}

// Recomputes the dotted paths of a subtree moved to `path`.
void set_paths(ConfigNode& n, const std::string& path) {
  n.path = path;
  for (auto& kv : n.map) set_paths(kv.second, join_path(path, kv.first));
  for (size_t i = 0; i < n.seq.size(); ++i) set_paths(n.seq[i], join_path(path, std::to_string(i)));
}

void set_location(ConfigNode& n, const std::string& file, int line) {
  n.file = file;
  n.line = line;
  for (auto& kv : n.map) set_location(kv.second, file, line);
  for (auto& item : n.seq) set_location(item, file, line);
}

// ---------------------------------------------------------------------------------------
// YAML -> ConfigNode

int one_based_line(const YAML::Node& n) {
  int line = n.Mark().line;
  return line >= 0 ? line + 1 : 0;
}

ConfigNode convert(const YAML::Node& y, const std::string& file, int line,
                   const std::string& path) {
  ConfigNode n;
  n.file = file;
  n.line = line;
  n.path = path;
  switch (y.Type()) {
    case YAML::NodeType::Undefined:
    case YAML::NodeType::Null:
      n.kind = ConfigNode::Kind::Null;
      break;
    case YAML::NodeType::Scalar:
      n.kind = ConfigNode::Kind::Scalar;
      n.scalar = y.Scalar();
      break;
    case YAML::NodeType::Sequence: {
      n.kind = ConfigNode::Kind::Seq;
      size_t i = 0;
      for (const YAML::Node& item : y) {
        int item_line = one_based_line(item);
        // A null item has no text of its own; yaml-cpp then reports odd marks.
        if (item_line == 0 || item.IsNull()) item_line = line;
        n.seq.push_back(convert(item, file, item_line, join_path(path, std::to_string(i))));
        ++i;
      }
      break;
    }
    case YAML::NodeType::Map: {
      n.kind = ConfigNode::Kind::Map;
      for (auto it = y.begin(); it != y.end(); ++it) {
        // Copies: the iterator hands out a temporary pair.
        const YAML::Node key = it->first;
        const YAML::Node value = it->second;
        // A value is located at its key: that is the line a reader looks for, and a null
        // value (`key:` alone) has no position of its own.
        int key_line = one_based_line(key);
        CL_CHECK(key.IsScalar(), file << ":" << key_line << ": keys must be plain text, got "
                                      << (key.IsNull() ? "an empty key" : "a list or map")
                                      << (path.empty() ? "" : " inside `" + path + "`"));
        const std::string name = key.Scalar();
        if (const ConfigNode* first = n.find(name)) {
          CL_FAIL(file << ":" << key_line << ": duplicate key `" << join_path(path, name)
                       << "` (first written at line " << first->line
                       << "); each key may appear once per map");
        }
        n.map.emplace_back(name, convert(value, file, key_line, join_path(path, name)));
      }
      break;
    }
  }
  return n;
}

bool file_exists(const fs::path& p) {
  std::error_code ec;
  return fs::is_regular_file(p, ec);
}

std::string read_text(const std::string& file) {
  std::ifstream in(file, std::ios::binary);
  CL_CHECK(in, "cannot read config file `" << file << "`");
  std::ostringstream os;
  os << in.rdbuf();
  return os.str();
}

// ---------------------------------------------------------------------------------------
// Scalars <-> values

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool parse_bool(const std::string& s, bool& out) {
  std::string l = lower(s);
  bool is_true = l == "true" || l == "yes";
  bool is_false = l == "false" || l == "no";
  if (is_true || is_false) out = is_true;
  return is_true || is_false;
}

bool parse_int64(const std::string& s, long long lo, long long hi, long long& out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end != s.c_str() + s.size() || v < lo || v > hi) return false;
  out = v;
  return true;
}

bool parse_double(const std::string& s, double& out) {
  std::string l = lower(s);
  // YAML spells the special values with a dot.
  if (l == ".inf" || l == "+.inf" || l == "-.inf" || l == ".nan") {
    out = l == ".nan" ? std::nan("") : (l[0] == '-' ? -HUGE_VAL : HUGE_VAL);
    return true;
  }
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  char* end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (end != s.c_str() + s.size()) return false;
  out = v;
  return true;
}

// Shortest of %.15g..%.17g that reads back exactly; always looks like a float.
std::string format_double(double v) {
  if (std::isnan(v)) return ".nan";
  if (std::isinf(v)) return v > 0 ? ".inf" : "-.inf";
  char buf[40];
  for (int precision = 15; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof buf, "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v) break;
  }
  std::string s = buf;
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
  return s;
}

std::string format_value(bool v) { return v ? "true" : "false"; }
std::string format_value(int v) { return std::to_string(v); }
std::string format_value(int64_t v) { return std::to_string(v); }
std::string format_value(double v) { return format_double(v); }
std::string format_value(const std::string& v) { return v; }


// ---------------------------------------------------------------------------------------
// Emitting

bool is_null_word(const std::string& s) {
  return s.empty() || s == "~" || s == "null" || s == "Null" || s == "NULL";
}

void emit(YAML::Emitter& out, const ConfigNode& n) {
  switch (n.kind) {
    case ConfigNode::Kind::Null:
      out << YAML::Null;
      break;
    case ConfigNode::Kind::Scalar:
      // A scalar spelled like null must stay a string when read back.
      if (is_null_word(n.scalar)) out << YAML::DoubleQuoted;
      out << n.scalar;
      break;
    case ConfigNode::Kind::Seq:
      out << YAML::BeginSeq;
      for (const auto& item : n.seq) emit(out, item);
      out << YAML::EndSeq;
      break;
    case ConfigNode::Kind::Map:
      out << YAML::BeginMap;
      for (const auto& kv : n.map) {
        out << YAML::Key << kv.first << YAML::Value;
        emit(out, kv.second);
      }
      out << YAML::EndMap;
      break;
  }
}

// Renders a documented default on one line: `3`, `0.1`, `[1, 2]`, `""`.
std::string render_inline(const std::string& s) { return s.empty() ? "\"\"" : s; }


// ---------------------------------------------------------------------------------------
// base: resolution

struct BaseRef {
  std::string name;
  const ConfigNode* node;
};

std::vector<BaseRef> base_refs(const ConfigNode& base) {
  std::vector<BaseRef> refs;
  auto add = [&](const ConfigNode& item) {
    CL_CHECK(item.is_scalar() && !item.scalar.empty(),
             prefix(item) << "key `" << item.path
                          << "`: expected a config file name (or a list of them), got "
                          << describe_kind(item));
    refs.push_back({item.scalar, &item});
  };
  if (base.is_null()) return refs;
  if (base.is_seq()) {
    for (const auto& item : base.seq) add(item);
  } else {
    add(base);
  }
  return refs;
}

std::string resolve_base(const BaseRef& ref, const std::string& including_file,
                         const std::vector<std::string>& search_dirs) {
  fs::path name(ref.name);
  std::vector<fs::path> candidates;
  if (name.is_absolute()) {
    candidates.push_back(name);
  } else {
    candidates.push_back(fs::path(including_file).parent_path() / name);
    for (const auto& dir : search_dirs) candidates.push_back(fs::path(dir) / name);
  }
  // `base: caches/fora` is accepted for `caches/fora.yaml`.
  if (!name.has_extension()) {
    size_t n = candidates.size();
    for (size_t i = 0; i < n; ++i) candidates.push_back(fs::path(candidates[i]).concat(".yaml"));
  }
  std::string looked;
  for (const auto& c : candidates) {
    fs::path normal = c.lexically_normal();
    if (file_exists(normal)) return normal.string();
    if (!looked.empty()) looked += ", ";
    looked += normal.string();
  }
  CL_FAIL(prefix(*ref.node) << "base `" << ref.name << "` of `" << including_file
                            << "` not found (looked in: " << looked << ")");
}

std::string canonical_key(const std::string& file) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::path(file), ec);
  return ec ? fs::path(file).lexically_normal().string() : p.string();
}

ConfigNode load_recursive(const std::string& file, const std::vector<std::string>& search_dirs,
                          std::vector<std::pair<std::string, std::string>>& stack) {
  std::string key = canonical_key(file);
  for (size_t i = 0; i < stack.size(); ++i) {
    if (stack[i].first != key) continue;
    std::string chain;
    for (size_t j = i; j < stack.size(); ++j) chain += stack[j].second + " -> ";
    CL_FAIL("`base:` cycle: " << chain << file << " (a config cannot include itself)");
  }
  stack.emplace_back(key, file);

  ConfigNode top = parse_config_file(file);
  if (top.is_null()) top = ConfigNode::make_map();
  CL_CHECK(top.is_map(),
           file << ": the top level must be a map of keys, got " << describe_kind(top));
  top.file = file;
  top.line = 1;

  ConfigNode result = ConfigNode::make_map();
  if (const ConfigNode* base = top.find("base")) {
    for (const BaseRef& ref : base_refs(*base)) {
      ConfigNode loaded = load_recursive(resolve_base(ref, file, search_dirs), search_dirs, stack);
      merge_config(result, loaded);
    }
  }
  top.erase("base");
  merge_config(result, top);
  stack.pop_back();
  return result;
}

const ConfigNode* type_of(const ConfigNode& n) {
  const ConfigNode* t = n.find("type");
  return t && t->is_scalar() ? t : nullptr;
}

bool is_index(const std::string& s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

std::string trim(const std::string& s) {
  size_t b = s.find_first_not_of(" \t");
  if (b == std::string::npos) return "";
  size_t e = s.find_last_not_of(" \t");
  return s.substr(b, e - b + 1);
}

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diagonal = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      size_t above = row[j];
      size_t substitute = diagonal + (a[i - 1] == b[j - 1] ? 0 : 1);
      row[j] = std::min({above + 1, row[j - 1] + 1, substitute});
      diagonal = above;
    }
  }
  return row[b.size()];
}

}  // namespace config_detail

using namespace config_detail;

// ---------------------------------------------------------------------------------------
// ConfigNode

const ConfigNode* ConfigNode::find(const std::string& key) const {
  for (const auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

ConfigNode* ConfigNode::find(const std::string& key) {
  for (auto& kv : map)
    if (kv.first == key) return &kv.second;
  return nullptr;
}

ConfigNode& ConfigNode::child(const std::string& key) {
  if (is_null()) kind = Kind::Map;
  CL_CHECK(is_map(), prefix(*this) << "key `" << path << "` is " << describe_kind(*this)
                                   << ", not a map, so it cannot hold key `" << key << "`");
  if (ConfigNode* existing = find(key)) return *existing;
  ConfigNode n;
  n.path = join_path(path, key);
  map.emplace_back(key, std::move(n));
  return map.back().second;
}

void ConfigNode::erase(const std::string& key) {
  map.erase(std::remove_if(map.begin(), map.end(), [&](const auto& kv) { return kv.first == key; }),
            map.end());
}

std::vector<std::string> ConfigNode::keys() const {
  std::vector<std::string> out;
  for (const auto& kv : map) out.push_back(kv.first);
  return out;
}

std::string ConfigNode::where() const {
  std::string loc = location(*this);
  if (path.empty()) return loc.empty() ? "top level" : loc;
  return loc.empty() ? "key `" + path + "`" : loc + ", key `" + path + "`";
}

ConfigNode ConfigNode::make_scalar(std::string value, std::string path) {
  ConfigNode n;
  n.kind = Kind::Scalar;
  n.scalar = std::move(value);
  n.path = std::move(path);
  return n;
}

ConfigNode ConfigNode::make_map(std::string path) {
  ConfigNode n;
  n.kind = Kind::Map;
  n.path = std::move(path);
  return n;
}

// ---------------------------------------------------------------------------------------
// Parsing, loading, merging

ConfigNode parse_config_string(const std::string& text, const std::string& file_label) {
  YAML::Node root;
  try {
    root = YAML::Load(text);
  } catch (const YAML::ParserException& e) {
    std::string where = file_label;
    if (!e.mark.is_null()) where += ":" + std::to_string(e.mark.line + 1);
    CL_FAIL(where << ": YAML syntax error: " << e.msg);
  } catch (const YAML::Exception& e) {
    CL_FAIL(file_label << ": YAML error: " << e.msg);
  }
  int line = one_based_line(root);
  return convert(root, file_label, line > 0 ? line : 1, "");
}

ConfigNode parse_config_file(const std::string& file) {
  if (!file_exists(file)) {
    fs::path p(file);
    std::error_code ec;
    fs::path dir = p.is_absolute() ? p.parent_path() : fs::current_path(ec) / p.parent_path();
    CL_FAIL("config file `" << file << "` not found (looked in: " << dir.lexically_normal().string()
                            << ")");
  }
  return parse_config_string(read_text(file), file);
}

ConfigNode load_config(const std::string& file, const std::vector<std::string>& search_dirs) {
  std::vector<std::pair<std::string, std::string>> stack;
  return load_recursive(file, search_dirs, stack);
}

void merge_config(ConfigNode& base, const ConfigNode& top) {
  const ConfigNode* base_type = base.is_map() ? type_of(base) : nullptr;
  const ConfigNode* top_type = top.is_map() ? type_of(top) : nullptr;
  bool switches_type = base_type && top_type && base_type->scalar != top_type->scalar;
  if (!base.is_map() || !top.is_map() || switches_type) {
    std::string path = base.path;
    base = top;
    set_paths(base, path);
    return;
  }
  for (const auto& kv : top.map) {
    if (ConfigNode* existing = base.find(kv.first)) {
      merge_config(*existing, kv.second);
    } else {
      base.map.emplace_back(kv.first, kv.second);
      set_paths(base.map.back().second, join_path(base.path, kv.first));
    }
  }
  // The merged map was last written by `top`.
  base.file = top.file;
  base.line = top.line;
}

void apply_override(ConfigNode& root, const std::string& assignment) {
  size_t eq = assignment.find('=');
  CL_CHECK(eq != std::string::npos,
           kCommandLine << ": override `" << assignment
                        << "` has no `=`; write it as key=value, e.g. `cache.interval=3`");
  std::string key = trim(assignment.substr(0, eq));
  std::string text = assignment.substr(eq + 1);
  CL_CHECK(!key.empty(), kCommandLine << ": override `" << assignment
                                      << "` has an empty key; write it as key=value, e.g. "
                                         "`cache.interval=3`");

  // `a.b.c`, where `a[b.c]` quotes a key that has dots itself (a variant `fbcache_t0.05`).
  // `bracketed[i]`: part i was quoted, so it is never merged with its neighbours below.
  std::vector<std::string> parts;
  std::vector<bool> bracketed;
  std::string part;
  bool in_bracket = false, closed = false;
  for (char c : key) {
    if (in_bracket) {
      if (c == ']') in_bracket = false, closed = true;
      else part += c;
    } else if (c == '[') {
      CL_CHECK(!closed, kCommandLine << ": override `" << assignment << "`: write `a[b].c`, a `.` after `]`");
      if (!part.empty() || parts.empty()) parts.push_back(part), bracketed.push_back(false);
      part.clear();
      in_bracket = true;
    } else if (c == '.') {
      parts.push_back(part), bracketed.push_back(closed);
      part.clear();
      closed = false;
    } else {
      CL_CHECK(!closed, kCommandLine << ": override `" << assignment << "`: write `a[b].c`, a `.` after `]`");
      part += c;
    }
  }
  CL_CHECK(!in_bracket, kCommandLine << ": override `" << assignment << "`: `[` without its `]`");
  parts.push_back(part), bracketed.push_back(closed);
  for (const auto& p : parts)
    CL_CHECK(!p.empty(), kCommandLine << ": override `" << assignment << "`: key `" << key << "` has an empty part");

  YAML::Node parsed;
  try {
    parsed = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    CL_FAIL(kCommandLine << ": override `" << assignment
                         << "`: the value is not valid YAML: " << e.msg);
  }
  ConfigNode value = convert(parsed, kCommandLine, 0, "");
  set_location(value, kCommandLine, 0);

  // A map key that itself contains dots is matched whole: the longest run of parts that names
  // an existing key wins (`variants.fbcache_t0.05.cache.threshold` reaches `fbcache_t0.05`).
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    if (bracketed[i]) continue;
    const ConfigNode* node = &root;
    for (size_t k = 0; k < i && node; ++k)
      node = node->is_map() ? node->find(parts[k]) : nullptr;
    if (!node || !node->is_map() || node->find(parts[i])) continue;
    for (size_t j = parts.size(); j > i + 1; --j) {
      std::string joined = parts[i];
      for (size_t k = i + 1; k < j; ++k) joined += "." + parts[k];
      bool plain = std::none_of(bracketed.begin() + i, bracketed.begin() + j, [](bool b) { return b; });
      if (plain && node->find(joined)) {
        parts[i] = joined;
        parts.erase(parts.begin() + i + 1, parts.begin() + j);
        bracketed.erase(bracketed.begin() + i + 1, bracketed.begin() + j);
        break;
      }
    }
  }
  // An override never adds a variant: a name that matches none is a typo.
  if (parts.size() > 1 && parts[0] == "variants" && root.find("variants") && root.find("variants")->is_map() &&
      !root.find("variants")->find(parts[1])) {
    std::string names;
    for (auto& kv : root.find("variants")->map) names += (names.empty() ? "" : ", ") + kv.first;
    CL_FAIL(kCommandLine << ": override `" << assignment << "`: no variant `" << parts[1] << "`; variants: " << names
                         << " (a name with dots can also be written `variants[NAME].key`)");
  }

  ConfigNode* cur = &root;
  for (size_t i = 0; i < parts.size(); ++i) {
    const std::string& part = parts[i];
    bool last = i + 1 == parts.size();
    if (cur->is_seq()) {
      // `claims.0.left=...` addresses a list item by its index.
      CL_CHECK(is_index(part) && std::stoul(part) < cur->seq.size(),
               kCommandLine << ": override `" << assignment << "`: " << cur->where()
                            << " is a list of " << cur->seq.size() << " items; `" << part
                            << "` is not an index into it");
      ConfigNode& item = cur->seq[std::stoul(part)];
      if (last) merge_config(item, value);
      cur = &item;
      continue;
    }
    CL_CHECK(cur->is_map() || cur->is_null(),
             kCommandLine << ": override `" << assignment << "`: " << cur->where() << " is "
                          << describe_kind(*cur) << ", not a map, so it has no key `" << part
                          << "`");
    if (last) {
      if (ConfigNode* existing = cur->find(part)) {
        merge_config(*existing, value);
      } else {
        ConfigNode& fresh = cur->child(part);
        std::string path = fresh.path;
        fresh = value;
        set_paths(fresh, path);
      }
    } else {
      bool existed = cur->find(part) != nullptr;
      cur = &cur->child(part);
      if (!existed) cur->file = kCommandLine;
    }
  }
}

std::string to_yaml(const ConfigNode& node) {
  YAML::Emitter out;
  out << YAML::Block;
  emit(out, node);
  return std::string(out.c_str()) + "\n";
}

std::string did_you_mean(const std::string& bad, const std::vector<std::string>& valid) {
  const size_t limit = std::max<size_t>(2, bad.size() / 3);
  std::vector<std::pair<size_t, std::string>> close;  // stable by distance, then given order
  for (const auto& candidate : valid) {
    size_t d = edit_distance(lower(bad), lower(candidate));
    // Rewriting every character is no resemblance, however short the words.
    if (d <= limit && d < std::max(bad.size(), candidate.size())) close.emplace_back(d, candidate);
  }
  std::stable_sort(close.begin(), close.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  if (close.size() > 3) close.resize(3);
  if (close.empty()) return "";
  std::string s = " (did you mean ";
  for (size_t i = 0; i < close.size(); ++i) {
    if (i > 0) s += i + 1 == close.size() ? " or " : ", ";
    s += "`" + close[i].second + "`";
  }
  return s + "?)";
}

}  // namespace cachelab
