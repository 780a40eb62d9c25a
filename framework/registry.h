// Name -> factory registries. Every extension point of cachelab is declared in
// registries.h; components add themselves with one line in their folder's
// register_*() function (explicit calls, so the linker cannot drop them).
#pragma once
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "framework/config.h"
#include "framework/error.h"

namespace cachelab {

struct Site;
struct Tap;
struct LinearRef;
struct RunOptions;

// What a factory may know beyond its own options: the backbone it will act on and the
// run settings. Every pointer may be null (e.g. when `cachelab list` builds nothing).
struct BuildContext {
  const std::vector<Site>* sites = nullptr;
  const std::vector<Tap>* taps = nullptr;
  const std::vector<LinearRef>* linears = nullptr;
  const RunOptions* run = nullptr;
};

namespace detail {
template <class O, class = void>
struct has_check : std::false_type {};
template <class O>
struct has_check<O, std::void_t<decltype(std::declval<const O&>().check(std::declval<OptionChecks&>()))>>
    : std::true_type {};
}  // namespace detail

// Reads the options strictly and checks their values (ranges, enums, cross-field rules)
// with the options' `check(OptionChecks&)` when it has one.
template <class Options>
Options read_checked(const ConfigNode& node, const std::string& label) {
  Options o = read_options<Options>(node, label);
  if constexpr (detail::has_check<Options>::value) {
    OptionChecks c(node, label);
    o.check(c);
  }
  return o;
}

template <class Base>
class Registry {
 public:
  // Builds the component from its config map; writes the options actually used
  // (defaults included) to `resolved` when given.
  using Factory =
      std::function<std::unique_ptr<Base>(const ConfigNode& node, ConfigNode* resolved, const BuildContext& ctx)>;
  // Reads the options strictly and returns them as a map, defaults included (no object built).
  using Resolver = std::function<ConfigNode(const ConfigNode& node)>;
  struct Entry {
    std::string name, description;
    std::vector<KeyDoc> keys;
    Factory make;
    Resolver resolve;
    std::string registered_at;  // file of the registration, for duplicate-name errors
  };

  explicit Registry(std::string kind) : kind_(std::move(kind)) {}

  // One registration line: registry.add<ForaPolicy, ForaOptions>("fora", "...", __FILE__).
  // Impl is constructible from `const Options&`, or `(const Options&, const BuildContext&)`.
  template <class Impl, class Options>
  void add(const std::string& name, const std::string& description, const char* file = "") {
    Entry e;
    e.name = name;
    e.description = description;
    e.registered_at = file;
    OptionDocumenter doc;
    Options defaults;
    defaults.fields(doc);
    e.keys = doc.keys;
    const std::string label = kind_ + " `" + name + "`";
    auto write = [name](const ConfigNode& node, Options& o) {
      ConfigNode out = ConfigNode::make_map(node.path);
      out.child("type") = ConfigNode::make_scalar(name, node.path.empty() ? "type" : node.path + ".type");
      OptionWriter w(out);
      o.fields(w);
      return out;
    };
    e.resolve = [label, write](const ConfigNode& node) {
      Options o = read_checked<Options>(node, label);
      return write(node, o);
    };
    e.make = [label, write](const ConfigNode& node, ConfigNode* resolved,
                            const BuildContext& ctx) -> std::unique_ptr<Base> {
      Options o = read_checked<Options>(node, label);
      if (resolved) *resolved = write(node, o);
      if constexpr (std::is_constructible_v<Impl, const Options&, const BuildContext&>)
        return std::make_unique<Impl>(o, ctx);
      else
        return std::make_unique<Impl>(o);
    };
    add_entry(std::move(e));
  }

  void add_entry(Entry e) {
    auto it = entries_.find(e.name);
    CL_CHECK(it == entries_.end(), kind_ << " `" << e.name << "` is registered twice (first in "
                                         << it->second.registered_at << ", again in " << e.registered_at << ")");
    entries_.emplace(e.name, std::move(e));
  }

  // Builds from a map with a `type:` key. Unknown type: lists the registered names.
  std::unique_ptr<Base> build(const ConfigNode& node, ConfigNode* resolved = nullptr,
                              const BuildContext& ctx = BuildContext()) const {
    return entry(node).make(node, resolved, ctx);
  }
  ConfigNode resolve(const ConfigNode& node) const { return entry(node).resolve(node); }

  const Entry& entry(const ConfigNode& node) const {
    CL_CHECK(node.is_map(), node.where() << ": expected a map with a `type:` key for a " << kind_);
    const ConfigNode* t = node.find("type");
    CL_CHECK(t && t->is_scalar(), node.where() << ": a " << kind_ << " needs `type:`, one of: " << joined());
    auto it = entries_.find(t->scalar);
    CL_CHECK(it != entries_.end(), t->where() << ": unknown " << kind_ << " type `" << t->scalar << "`"
                                              << did_you_mean(t->scalar, names()) << "; registered: " << joined());
    return it->second;
  }

  bool has(const std::string& name) const { return entries_.count(name) > 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> n;
    for (auto& kv : entries_) n.push_back(kv.first);
    return n;
  }
  const std::map<std::string, Entry>& entries() const { return entries_; }
  const std::string& kind() const { return kind_; }

 private:
  std::string joined() const {
    std::string s;
    for (auto& kv : entries_) s += (s.empty() ? "" : ", ") + kv.first;
    return s;
  }
  std::string kind_;
  std::map<std::string, Entry> entries_;
};

}  // namespace cachelab
