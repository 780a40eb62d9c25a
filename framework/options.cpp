// Reading, writing, documenting and checking a component's options (config.h), and
// nested components.
#include <algorithm>
#include <climits>
#include <cmath>
#include <sstream>

#include "framework/config.h"
#include "framework/config_detail.h"
#include "framework/error.h"

namespace cachelab {

using namespace config_detail;

// ---------------------------------------------------------------------------------------
// OptionReader

namespace {

std::string component_note(const std::string& component) {
  return component.empty() ? "" : " (" + component + ")";
}

// One paragraph: "exp.yaml:7: key `cache.interval`: expected an integer, got `three` (cache
// `fora`)".
[[noreturn]] void wrong_type(const ConfigNode& n, const std::string& expected,
                             const std::string& component) {
  CL_FAIL(prefix(n) << "key `" << n.path << "`: expected " << expected << ", got "
                    << describe_kind(n) << component_note(component));
}

// A node read by the reader always knows its dotted path, even one built in code.
ConfigNode with_path(const ConfigNode& n, const std::string& path) {
  ConfigNode copy = n;
  if (copy.path.empty()) copy.path = path;
  return copy;
}

const char* const kExpectBool = "a bool (true/false/yes/no)";
const char* const kExpectInt = "an integer";
const char* const kExpectInt64 = "a 64-bit integer";
const char* const kExpectFloat = "a number";
const char* const kExpectString = "a string";

bool read_scalar(const std::string& s, bool& v) { return parse_bool(s, v); }
bool read_scalar(const std::string& s, int& v) {
  long long x;
  if (!parse_int64(s, INT_MIN, INT_MAX, x)) return false;
  v = static_cast<int>(x);
  return true;
}
bool read_scalar(const std::string& s, int64_t& v) {
  long long x;
  if (!parse_int64(s, LLONG_MIN, LLONG_MAX, x)) return false;
  v = static_cast<int64_t>(x);
  return true;
}
bool read_scalar(const std::string& s, double& v) { return parse_double(s, v); }
bool read_scalar(const std::string& s, std::string& v) {
  v = s;
  return true;
}

template <class T>
void read_one(const ConfigNode& n, T& v, const char* expected, const std::string& component) {
  if (!n.is_scalar() || !read_scalar(n.scalar, v)) wrong_type(n, expected, component);
}

template <class T>
void read_list(const ConfigNode& n, std::vector<T>& v, const char* expected_item,
               const std::string& component) {
  std::vector<T> out;
  if (n.is_null()) {
    // `key:` with nothing after it: an empty list.
  } else if (n.is_scalar()) {
    // A single value stands for a one-element list.
    T x;
    read_one(n, x, expected_item, component);
    out.push_back(x);
  } else if (n.is_seq()) {
    for (size_t i = 0; i < n.seq.size(); ++i) {
      T x;
      read_one(with_path(n.seq[i], join_path(n.path, std::to_string(i))), x, expected_item,
               component);
      out.push_back(x);
    }
  } else {
    wrong_type(n, std::string("a list of ") + expected_item + "s", component);
  }
  v = std::move(out);
}

}  // namespace

OptionReader::OptionReader(const ConfigNode& node, std::string component)
    : node_(node), component_(std::move(component)) {
  CL_CHECK(node_.is_map() || node_.is_null(),
           prefix(node_) << (node_.path.empty() ? std::string("the top level")
                                                : "key `" + node_.path + "`")
                         << ": expected a map of options, got " << describe_kind(node_)
                         << component_note(component_));
}

const ConfigNode* OptionReader::take(const char* key) {
  if (std::find(asked_.begin(), asked_.end(), key) == asked_.end()) asked_.push_back(key);
  return node_.find(key);
}

#define CACHELAB_READ(T, EXPECT)                                                  \
  void OptionReader::operator()(const char* key, T& v, const char*) {             \
    if (const ConfigNode* n = take(key))                                          \
      read_one(with_path(*n, join_path(node_.path, key)), v, EXPECT, component_); \
  }
CACHELAB_READ(bool, kExpectBool)
CACHELAB_READ(int, kExpectInt)
CACHELAB_READ(int64_t, kExpectInt64)
CACHELAB_READ(double, kExpectFloat)
#undef CACHELAB_READ

void OptionReader::operator()(const char* key, std::string& v, const char*) {
  const ConfigNode* n = take(key);
  if (!n) return;
  if (n->is_null()) {
    v.clear();  // `key:` with nothing after it: the empty string
    return;
  }
  read_one(with_path(*n, join_path(node_.path, key)), v, kExpectString, component_);
}

void OptionReader::operator()(const char* key, std::vector<int>& v, const char*) {
  if (const ConfigNode* n = take(key))
    read_list(with_path(*n, join_path(node_.path, key)), v, kExpectInt, component_);
}

void OptionReader::operator()(const char* key, std::vector<double>& v, const char*) {
  if (const ConfigNode* n = take(key))
    read_list(with_path(*n, join_path(node_.path, key)), v, kExpectFloat, component_);
}

void OptionReader::operator()(const char* key, std::vector<std::string>& v, const char*) {
  if (const ConfigNode* n = take(key))
    read_list(with_path(*n, join_path(node_.path, key)), v, kExpectString, component_);
}

void OptionReader::finish() const {
  std::vector<std::pair<std::string, const ConfigNode*>> unknown;
  for (const auto& kv : node_.map) {
    if (kv.first == "type") continue;  // the registry's key, not the component's
    if (std::find(asked_.begin(), asked_.end(), kv.first) == asked_.end())
      unknown.emplace_back(kv.first, &kv.second);
  }
  if (unknown.empty()) return;

  const ConfigNode& first = *unknown[0].second;
  std::string dotted = join_path(node_.path, unknown[0].first);
  std::ostringstream os;
  os << prefix(first) << "unknown key `" << dotted << "`";
  if (!component_.empty()) os << " for " << component_;
  os << did_you_mean(unknown[0].first, asked_);
  if (asked_.empty()) {
    os << "; " << (component_.empty() ? std::string("this map") : component_)
       << " takes no options";
  } else {
    os << "; valid keys: ";
    for (size_t i = 0; i < asked_.size(); ++i) os << (i ? ", " : "") << asked_[i];
  }
  if (unknown.size() > 1) {
    os << "; also unknown:";
    for (size_t i = 1; i < unknown.size(); ++i) {
      const ConfigNode& n = *unknown[i].second;
      os << (i > 1 ? "," : "") << " `" << join_path(node_.path, unknown[i].first) << "`";
      if (n.line > 0) os << " (line " << n.line << ")";
      os << did_you_mean(unknown[i].first, asked_);
    }
  }
  CL_FAIL(os.str());
}

// ---------------------------------------------------------------------------------------
// OptionWriter

namespace {

// Replaces `slot` by `value`, keeping where the old value was written (the writer usually
// fills the very map the reader read).
void put(ConfigNode& slot, ConfigNode value) {
  std::string file = slot.file;
  int line = slot.line;
  std::string path = slot.path;
  slot = std::move(value);
  set_paths(slot, path);
  if (!file.empty()) set_location(slot, file, line);
}

}  // namespace

#define CACHELAB_WRITE(T)                                                   \
  void OptionWriter::operator()(const char* key, const T& v, const char*) { \
    ConfigNode& slot = out_.child(key);                                     \
    put(slot, ConfigNode::make_scalar(format_value(v)));                    \
  }
CACHELAB_WRITE(bool)
CACHELAB_WRITE(int)
CACHELAB_WRITE(int64_t)
CACHELAB_WRITE(double)
CACHELAB_WRITE(std::string)
#undef CACHELAB_WRITE

#define CACHELAB_WRITE_LIST(T)                                                           \
  void OptionWriter::operator()(const char* key, const std::vector<T>& v, const char*) { \
    ConfigNode& slot = out_.child(key);                                                  \
    put(slot, make_list(v, ""));                                                         \
  }
CACHELAB_WRITE_LIST(int)
CACHELAB_WRITE_LIST(double)
CACHELAB_WRITE_LIST(std::string)
#undef CACHELAB_WRITE_LIST

// ---------------------------------------------------------------------------------------
// OptionDocumenter

void OptionDocumenter::operator()(const char* key, const bool& v, const char* doc) {
  keys.push_back({key, "bool", format_value(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const int& v, const char* doc) {
  keys.push_back({key, "int", format_value(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const int64_t& v, const char* doc) {
  keys.push_back({key, "int64", format_value(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const double& v, const char* doc) {
  keys.push_back({key, "float", format_value(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const std::string& v, const char* doc) {
  keys.push_back({key, "string", render_inline(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const std::vector<int>& v, const char* doc) {
  keys.push_back({key, "list[int]", render_list(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const std::vector<double>& v, const char* doc) {
  keys.push_back({key, "list[float]", render_list(v), doc ? doc : ""});
}
void OptionDocumenter::operator()(const char* key, const std::vector<std::string>& v,
                                  const char* doc) {
  keys.push_back({key, "list[string]", render_list(v), doc ? doc : ""});
}

}  // namespace cachelab

// ---------------------------------------------------------------------------------------
// Nested components and value checks

namespace cachelab {
namespace {
ComponentResolver g_resolver = nullptr;
}  // namespace

void set_component_resolver(ComponentResolver r) { g_resolver = r; }

void OptionReader::operator()(const char* key, ComponentSpec& v, const char*) {
  const ConfigNode* n = take(key);
  if (!n || n->is_null()) return;
  const ConfigNode node = with_path(*n, join_path(node_.path, key));
  CL_CHECK(g_resolver, "internal: no component resolver installed (call register_all())");
  CL_CHECK(node.is_map(), prefix(node) << "key `" << node.path << "`: expected a " << v.kind
                                      << " as a map with a `type:` key, got " << describe_kind(node)
                                      << component_note(component_));
  v.node = g_resolver(v.kind, node);
}

void OptionReader::operator()(const char* key, std::vector<ComponentSpec>& v, const char*) {
  const ConfigNode* n = take(key);
  if (!n || n->is_null()) return;
  const ConfigNode node = with_path(*n, join_path(node_.path, key));
  CL_CHECK(g_resolver, "internal: no component resolver installed (call register_all())");
  const std::string kind = v.empty() ? std::string("component") : v.front().kind;
  CL_CHECK(node.is_seq(), prefix(node) << "key `" << node.path << "`: expected a list of " << kind
                                      << "s (maps with a `type:` key), got " << describe_kind(node)
                                      << component_note(component_));
  std::vector<ComponentSpec> out;
  for (size_t i = 0; i < node.seq.size(); ++i) {
    ComponentSpec c;
    c.kind = kind;
    c.node = g_resolver(kind, with_path(node.seq[i], join_path(node.path, std::to_string(i))));
    out.push_back(std::move(c));
  }
  // An empty list keeps its kind (the prototype) so that writing and documenting still know it.
  if (out.empty()) out.push_back(ComponentSpec{kind, ConfigNode()}), out.clear();
  v = std::move(out);
}

void OptionWriter::operator()(const char* key, const ComponentSpec& v, const char*) {
  ConfigNode& slot = out_.child(key);
  if (v.empty()) slot = ConfigNode();
  else put(slot, v.node);
}

void OptionWriter::operator()(const char* key, const std::vector<ComponentSpec>& v, const char*) {
  ConfigNode list;
  list.kind = ConfigNode::Kind::Seq;
  for (auto& c : v)
    if (!c.empty()) list.seq.push_back(c.node);
  put(out_.child(key), list);
}

void OptionDocumenter::operator()(const char* key, const ComponentSpec& v, const char* doc) {
  const ConfigNode* t = v.node.find("type");
  keys.push_back({key, v.kind, t ? t->scalar : "none", doc ? doc : ""});
}

void OptionDocumenter::operator()(const char* key, const std::vector<ComponentSpec>& v, const char* doc) {
  keys.push_back({key, "list[" + (v.empty() ? std::string("component") : v.front().kind) + "]", "[]",
                  doc ? doc : ""});
}

void OptionChecks::fail(const char* key, const std::string& rule) const {
  const ConfigNode* n = node_.find(key);
  const ConfigNode& at = n ? *n : node_;
  const std::string dotted = join_path(node_.path, key);
  std::ostringstream os;
  os << prefix(at) << "key `" << dotted << "`";
  if (n && n->is_scalar()) os << " = " << render_inline(n->scalar);
  else if (n && n->is_seq()) {
    std::string items;
    for (auto& item : n->seq) items += (items.empty() ? "" : ", ") + (item.is_scalar() ? item.scalar : "...");
    os << " = [" << items.substr(0, kMaxQuotedValue) << "]";
  }
  else if (!n) os << " (default)";
  if (!component_.empty()) os << " for " << component_;
  os << ": " << rule;
  CL_FAIL(os.str());
}

void OptionChecks::require(bool ok, const char* key, const std::string& rule) const {
  if (!ok) fail(key, rule);
}

void OptionChecks::one_of(const char* key, const std::string& value, const std::vector<std::string>& valid) const {
  if (std::find(valid.begin(), valid.end(), value) != valid.end()) return;
  std::string list;
  for (auto& v : valid) list += (list.empty() ? "" : ", ") + v;
  fail(key, "`" + value + "` is not one of " + list + did_you_mean(value, valid));
}

void OptionChecks::each_one_of(const char* key, const std::vector<std::string>& values,
                               const std::vector<std::string>& valid) const {
  for (auto& value : values)
    if (std::find(valid.begin(), valid.end(), value) == valid.end()) {
      std::string list;
      for (auto& v : valid) list += (list.empty() ? "" : ", ") + v;
      fail(key, "item `" + value + "` is not one of " + list + did_you_mean(value, valid));
    }
}

}  // namespace cachelab
