// Strict configuration: a YAML tree that remembers where every value came from, so that
// any error can name the file, line, dotted key, the bad value and what would be valid.
//
// Experiments compose presets with `base:` (a file name or a list of them, resolved
// relative to the including file, then to the configs/ folder) and are overridden by
// dotted CLI assignments (`cache.interval=3`). Components read their options through
// OptionReader, which rejects unknown keys ("did you mean ...") and wrong types.
// No torch in here: this header is included widely.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace cachelab {

struct ConfigNode {
  enum class Kind { Null, Scalar, Map, Seq };
  Kind kind = Kind::Null;
  std::string scalar;                                 // Kind::Scalar
  std::vector<std::pair<std::string, ConfigNode>> map;  // Kind::Map, insertion order
  std::vector<ConfigNode> seq;                        // Kind::Seq
  std::string file;                                   // where the value was written
  int line = 0;                                       // 1-based; 0 = not from a file
  std::string path;                                   // dotted key from the root, e.g. "cache.interval"

  bool is_map() const { return kind == Kind::Map; }
  bool is_seq() const { return kind == Kind::Seq; }
  bool is_scalar() const { return kind == Kind::Scalar; }
  bool is_null() const { return kind == Kind::Null; }
  const ConfigNode* find(const std::string& key) const;  // map child or nullptr
  ConfigNode* find(const std::string& key);
  // Map child, created (as Null) when absent; turns a Null node into a Map.
  ConfigNode& child(const std::string& key);
  void erase(const std::string& key);
  std::vector<std::string> keys() const;
  // "exp.yaml:12, key `cache.interval`" -- for error messages.
  std::string where() const;

  static ConfigNode make_scalar(std::string value, std::string path = "");
  static ConfigNode make_map(std::string path = "");
};

// Parses a YAML file into a tree (no `base:` handling). Errors name the file and line.
ConfigNode parse_config_file(const std::string& file);
ConfigNode parse_config_string(const std::string& text, const std::string& file_label);

// Loads an experiment or preset and resolves its `base:` chain: bases first, in order,
// then the file itself on top. Maps merge key by key; scalars and lists replace; a map
// whose `type:` differs from the base's replaces the base map whole (so switching a
// component does not inherit the old component's keys). `search_dirs` are tried for a
// base after the including file's own folder (cachelab passes <root>/configs).
ConfigNode load_config(const std::string& file, const std::vector<std::string>& search_dirs = {});

// Merges `top` onto `base` with the rules above.
void merge_config(ConfigNode& base, const ConfigNode& top);

// Applies "a.b.c=value" (value parsed as YAML: 3, 0.1, true, [1,2], text). Errors on a
// missing '=' or an empty key. Whether the key is valid is decided later by the reader.
void apply_override(ConfigNode& root, const std::string& assignment);

// Emits the tree as YAML text (block style, keys in insertion order).
std::string to_yaml(const ConfigNode& node);

// Up to three closest candidates by edit distance, formatted as " (did you mean `x`?)",
// or "" when nothing is close.
std::string did_you_mean(const std::string& bad, const std::vector<std::string>& valid);

// A nested component option (`inner: {type: fora, interval: 3}`): a map with a `type:`
// resolved recursively, with the same strict errors, by the registry named `kind`
// (cache, ops, ...). After reading, `node` holds the resolved map (defaults written out).
struct ComponentSpec {
  std::string kind;
  ConfigNode node;
  bool empty() const { return node.is_null(); }
};
// Installed by the registries (framework/registries.cpp): resolves a nested component.
using ComponentResolver = ConfigNode (*)(const std::string& kind, const ConfigNode& node);
void set_component_resolver(ComponentResolver r);

// Reading a component's options from its map, strictly.
//   OptionReader r(node);        // node: the component's map (its `type:` is skipped)
//   opts.fields(r);              // each field: r("interval", interval, "doc")
//   r.finish();                  // throws on any key no field asked for
// Supported field types: bool, int, int64_t, double, std::string, and std::vector of
// int, double, std::string. A wrong type names the key, value, line and expected type.
//
// A key added to a component after results were recorded with it is declared with the value
// that means "not used": r("parts", parts, "doc", std::vector<std::string>{"block"}). The
// resolved config leaves it out while it has that value, so the runs that do not use it keep
// their identities (run ids hash the resolved config, docs/summaries record them).
class OptionReader {
 public:
  explicit OptionReader(const ConfigNode& node, std::string component = "");
  template <class T>
  void operator()(const char* key, T& v, const char* doc, const T& /*unset*/) {
    (*this)(key, v, doc);
  }
  void operator()(const char* key, bool& v, const char* doc);
  void operator()(const char* key, int& v, const char* doc);
  void operator()(const char* key, int64_t& v, const char* doc);
  void operator()(const char* key, double& v, const char* doc);
  void operator()(const char* key, std::string& v, const char* doc);
  void operator()(const char* key, std::vector<int>& v, const char* doc);
  void operator()(const char* key, std::vector<double>& v, const char* doc);
  void operator()(const char* key, std::vector<std::string>& v, const char* doc);
  void operator()(const char* key, ComponentSpec& v, const char* doc);
  void operator()(const char* key, std::vector<ComponentSpec>& v, const char* doc);
  void finish() const;

 private:
  const ConfigNode* take(const char* key);
  const ConfigNode& node_;
  std::string component_;
  std::vector<std::string> asked_;
};

// Writes the options (defaults included) back into a map: the resolved config.
class OptionWriter {
 public:
  explicit OptionWriter(ConfigNode& out) : out_(out) {}
  template <class T>
  void operator()(const char* key, const T& v, const char* doc, const T& unset) {
    if (!same(v, unset)) (*this)(key, v, doc);  // (a key added later: see OptionReader)
  }
  void operator()(const char* key, const bool& v, const char* doc);
  void operator()(const char* key, const int& v, const char* doc);
  void operator()(const char* key, const int64_t& v, const char* doc);
  void operator()(const char* key, const double& v, const char* doc);
  void operator()(const char* key, const std::string& v, const char* doc);
  void operator()(const char* key, const std::vector<int>& v, const char* doc);
  void operator()(const char* key, const std::vector<double>& v, const char* doc);
  void operator()(const char* key, const std::vector<std::string>& v, const char* doc);
  void operator()(const char* key, const ComponentSpec& v, const char* doc);
  void operator()(const char* key, const std::vector<ComponentSpec>& v, const char* doc);

 private:
  template <class T>
  static bool same(const T& a, const T& b) {
    return a == b;
  }
  static bool same(const ComponentSpec& a, const ComponentSpec& b) { return a.empty() && b.empty(); }
  ConfigNode& out_;
};

// Documentation of a component's keys, for `cachelab list` and the README.
struct KeyDoc {
  std::string key, type, default_value, doc;
  bool added_later = false;  // declared with its unused value: left out of resolved configs at it
};
class OptionDocumenter {
 public:
  std::vector<KeyDoc> keys;
  template <class T>
  void operator()(const char* key, const T& v, const char* doc, const T& /*unset*/) {
    (*this)(key, v, doc);
    keys.back().added_later = true;
  }
  void operator()(const char* key, const bool& v, const char* doc);
  void operator()(const char* key, const int& v, const char* doc);
  void operator()(const char* key, const int64_t& v, const char* doc);
  void operator()(const char* key, const double& v, const char* doc);
  void operator()(const char* key, const std::string& v, const char* doc);
  void operator()(const char* key, const std::vector<int>& v, const char* doc);
  void operator()(const char* key, const std::vector<double>& v, const char* doc);
  void operator()(const char* key, const std::vector<std::string>& v, const char* doc);
  void operator()(const char* key, const ComponentSpec& v, const char* doc);
  void operator()(const char* key, const std::vector<ComponentSpec>& v, const char* doc);
};

// Value checks of a component's options, run where the config is read (so `validate`
// rejects a bad value before any run starts). Errors name the file, line, dotted key,
// the bad value and the rule:
//   exp.yaml:4: key `cache.interval` = 0 for cache `fora`: must be >= 1
class OptionChecks {
 public:
  OptionChecks(const ConfigNode& node, std::string component) : node_(node), component_(std::move(component)) {}
  void require(bool ok, const char* key, const std::string& rule) const;
  void one_of(const char* key, const std::string& value, const std::vector<std::string>& valid) const;
  void each_one_of(const char* key, const std::vector<std::string>& values, const std::vector<std::string>& valid) const;

 private:
  [[noreturn]] void fail(const char* key, const std::string& rule) const;
  const ConfigNode& node_;
  std::string component_;
};

// Reads a plain options struct (one with a `template <class V> void fields(V&)` member)
// from `node`, strictly. `component` names it in errors ("cache `fora`").
template <class Options>
Options read_options(const ConfigNode& node, const std::string& component) {
  Options o;
  OptionReader r(node, component);
  o.fields(r);
  r.finish();
  return o;
}

}  // namespace cachelab
