// Strict configuration: locations, base composition, merging, overrides, strict reading.
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/error.h"

namespace fs = std::filesystem;
using cachelab::ConfigNode;

namespace {

// A private folder under the system temp dir, removed at the end of the test.
struct TempDir {
  fs::path root;
  TempDir() {
    std::random_device rd;
    root = fs::temp_directory_path() / ("cachelab_config_test_" + std::to_string(rd()));
    fs::create_directories(root);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(root, ec);
  }
  std::string write(const std::string& name, const std::string& text) const {
    fs::path p = root / name;
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
    return p.string();
  }
};

// The message of the cachelab::Error thrown by `f`, or a test failure.
template <class F>
std::string error_of(F f) {
  try {
    f();
  } catch (const cachelab::Error& e) {
    return e.what();
  }
  BOOST_ERROR("expected a cachelab::Error");
  return "";
}

#define CHECK_CONTAINS(text, part)                                                                 \
  BOOST_CHECK_MESSAGE(std::string(text).find(part) != std::string::npos, "expected `" << (part)    \
                                                                                      << "` in:\n" \
                                                                                      << (text))

// Every option type the reader supports.
struct AllOptions {
  bool flag = false;
  int interval = 2;
  int64_t big = 1;
  double threshold = 0.1;
  std::string name = "copy";
  std::vector<int> steps = {1, 2};
  std::vector<double> weights = {0.5};
  std::vector<std::string> sites = {"body"};

  template <class V>
  void fields(V& v) {
    v("flag", flag, "a switch");
    v("interval", interval, "steps between full computations");
    v("big", big, "a large count");
    v("threshold", threshold, "relative L1 threshold");
    v("name", name, "predictor name");
    v("steps", steps, "steps to force");
    v("weights", weights, "mixing weights");
    v("sites", sites, "site names");
  }
};

struct FewOptions {
  int interval = 2;
  double threshold = 0.1;
  bool enabled = true;
  template <class V>
  void fields(V& v) {
    v("interval", interval, "");
    v("threshold", threshold, "");
    v("enabled", enabled, "");
  }
};

struct NoOptions {
  template <class V>
  void fields(V&) {}
};

}  // namespace

BOOST_AUTO_TEST_SUITE(config)

BOOST_AUTO_TEST_CASE(parse_records_lines_and_paths) {
  ConfigNode root = cachelab::parse_config_string(
      "# experiment\n"
      "name: demo\n"
      "cache:\n"
      "  type: fora\n"
      "  interval: 3\n"
      "claims:\n"
      "  - left: fora\n"
      "    right: none\n"
      "  - left: tea\n"
      "empty:\n",
      "exp.yaml");
  BOOST_REQUIRE(root.is_map());
  BOOST_CHECK_EQUAL(root.keys().size(), 4u);
  const ConfigNode* interval = root.find("cache")->find("interval");
  BOOST_REQUIRE(interval);
  BOOST_CHECK(interval->is_scalar());
  BOOST_CHECK_EQUAL(interval->scalar, "3");
  BOOST_CHECK_EQUAL(interval->line, 5);
  BOOST_CHECK_EQUAL(interval->file, "exp.yaml");
  BOOST_CHECK_EQUAL(interval->path, "cache.interval");
  BOOST_CHECK_EQUAL(interval->where(), "exp.yaml:5, key `cache.interval`");
  BOOST_CHECK_EQUAL(root.find("cache")->line, 3);

  const ConfigNode& claims = *root.find("claims");
  BOOST_REQUIRE(claims.is_seq());
  BOOST_CHECK_EQUAL(claims.seq.size(), 2u);
  BOOST_CHECK_EQUAL(claims.seq[1].find("left")->path, "claims.1.left");
  BOOST_CHECK_EQUAL(claims.seq[1].find("left")->line, 9);
  BOOST_CHECK_EQUAL(claims.seq[0].find("right")->line, 8);
  BOOST_CHECK(root.find("empty")->is_null());
  BOOST_CHECK_EQUAL(root.find("empty")->line, 10);
}

BOOST_AUTO_TEST_CASE(where_formats) {
  ConfigNode n = ConfigNode::make_scalar("3", "cache.interval");
  BOOST_CHECK_EQUAL(n.where(), "key `cache.interval`");
  n.file = "<command line>";
  BOOST_CHECK_EQUAL(n.where(), "<command line>, key `cache.interval`");
  n.file = "exp.yaml";
  n.line = 7;
  BOOST_CHECK_EQUAL(n.where(), "exp.yaml:7, key `cache.interval`");
}

BOOST_AUTO_TEST_CASE(node_child_and_erase) {
  ConfigNode root;
  BOOST_CHECK(root.is_null());
  ConfigNode& cache = root.child("cache");
  BOOST_CHECK(root.is_map());
  BOOST_CHECK_EQUAL(cache.path, "cache");
  cache.child("interval") = ConfigNode::make_scalar("3", "cache.interval");
  BOOST_CHECK_EQUAL(&root.child("cache"), &cache);  // existing child is returned
  root.child("other");
  root.erase("other");
  BOOST_CHECK_EQUAL(root.keys().size(), 1u);
  BOOST_CHECK(root.find("other") == nullptr);

  ConfigNode scalar = ConfigNode::make_scalar("x", "name");
  std::string msg = error_of([&] { scalar.child("a"); });
  CHECK_CONTAINS(msg, "key `name` is `x`, not a map");
}

BOOST_AUTO_TEST_CASE(parse_errors_name_file_and_line) {
  std::string msg =
      error_of([] { cachelab::parse_config_string("a: 1\nb: [1, 2\nc: 3\n", "exp.yaml"); });
  CHECK_CONTAINS(msg, "exp.yaml:");
  CHECK_CONTAINS(msg, "YAML syntax error: ");
  BOOST_CHECK_EQUAL(msg.rfind("exp.yaml:", 0), 0u);  // the location comes first

  msg = error_of([] { cachelab::parse_config_string("a: 1\nb: 2\na: 3\n", "dup.yaml"); });
  CHECK_CONTAINS(msg, "dup.yaml:3: duplicate key `a` (first written at line 1)");

  msg = error_of([] { cachelab::parse_config_file("no/such/file.yaml"); });
  CHECK_CONTAINS(msg, "config file `no/such/file.yaml` not found (looked in: ");
}

BOOST_AUTO_TEST_CASE(base_composition) {
  TempDir dir;
  dir.write("configs/base.yaml",
            "seed: 0\n"
            "steps: 50\n"
            "cache:\n"
            "  type: fora\n"
            "  interval: 2\n"
            "  warmup: 1\n");
  dir.write("configs/sampler.yaml", "sampler:\n  type: ddim\n  eta: 0\nsteps: 20\n");
  // Found next to the experiment, before the search dirs.
  dir.write("experiments/local.yaml", "tag: local\n");
  std::string exp = dir.write("experiments/exp.yaml",
                              "base: [base.yaml, sampler, local.yaml]\n"
                              "seed: 7\n"
                              "cache:\n"
                              "  interval: 3\n");

  ConfigNode root = cachelab::load_config(exp, {(dir.root / "configs").string()});
  BOOST_CHECK(root.find("base") == nullptr);
  BOOST_CHECK_EQUAL(root.find("seed")->scalar, "7");
  BOOST_CHECK_EQUAL(root.find("seed")->file, exp);
  BOOST_CHECK_EQUAL(root.find("seed")->line, 2);
  BOOST_CHECK_EQUAL(root.find("steps")->scalar, "20");  // later base wins
  BOOST_CHECK_EQUAL(root.find("tag")->scalar, "local");
  const ConfigNode& cache = *root.find("cache");
  BOOST_CHECK_EQUAL(cache.find("type")->scalar, "fora");
  BOOST_CHECK_EQUAL(cache.find("interval")->scalar, "3");
  BOOST_CHECK_EQUAL(cache.find("interval")->line, 4);
  BOOST_CHECK_EQUAL(cache.find("warmup")->scalar, "1");
  BOOST_CHECK_EQUAL(cache.find("warmup")->line, 6);
  CHECK_CONTAINS(cache.find("warmup")->file, "base.yaml");
  BOOST_CHECK_EQUAL(cache.find("warmup")->path, "cache.warmup");
  // Bases come first, in order, then the file's own new keys.
  std::vector<std::string> expected = {"seed", "steps", "cache", "sampler", "tag"};
  BOOST_CHECK(root.keys() == expected);

  // A single string base, resolved recursively.
  std::string chained = dir.write("experiments/chained.yaml", "base: exp.yaml\nsteps: 10\n");
  ConfigNode c = cachelab::load_config(chained, {(dir.root / "configs").string()});
  BOOST_CHECK_EQUAL(c.find("steps")->scalar, "10");
  BOOST_CHECK_EQUAL(c.find("cache")->find("interval")->scalar, "3");
}

BOOST_AUTO_TEST_CASE(base_errors) {
  TempDir dir;
  std::string missing = dir.write("exp.yaml", "seed: 1\nbase:\n  - nowhere.yaml\n");
  std::string msg = error_of([&] { cachelab::load_config(missing, {"/opt/configs"}); });
  CHECK_CONTAINS(msg, "exp.yaml:3: base `nowhere.yaml` of `");
  CHECK_CONTAINS(msg, "not found (looked in: ");
  CHECK_CONTAINS(msg, "/opt/configs/nowhere.yaml");

  std::string a = dir.write("a.yaml", "base: b.yaml\nx: 1\n");
  dir.write("b.yaml", "base: a.yaml\ny: 2\n");
  msg = error_of([&] { cachelab::load_config(a); });
  CHECK_CONTAINS(msg, "cycle");
  CHECK_CONTAINS(msg, "a.yaml -> ");
  CHECK_CONTAINS(msg, "b.yaml -> ");

  std::string bad = dir.write("bad.yaml", "base: {x: 1}\n");
  msg = error_of([&] { cachelab::load_config(bad); });
  CHECK_CONTAINS(msg, "bad.yaml:1: key `base`: expected a config file name");

  // A diamond (two bases sharing a third) is not a cycle.
  dir.write("common.yaml", "z: 0\n");
  dir.write("l.yaml", "base: common.yaml\nl: 1\n");
  dir.write("r.yaml", "base: common.yaml\nr: 1\n");
  std::string diamond = dir.write("d.yaml", "base: [l.yaml, r.yaml]\n");
  ConfigNode d = cachelab::load_config(diamond);
  BOOST_CHECK_EQUAL(d.keys().size(), 3u);
}

BOOST_AUTO_TEST_CASE(merge_rules) {
  ConfigNode base = cachelab::parse_config_string(
      "cache:\n  type: fora\n  interval: 2\n  warmup: 1\nsteps: [1, 2, 3]\n", "base.yaml");
  ConfigNode same = cachelab::parse_config_string(
      "cache:\n  type: fora\n  interval: 5\nsteps: [9]\n", "top.yaml");
  ConfigNode merged = base;
  cachelab::merge_config(merged, same);
  BOOST_CHECK_EQUAL(merged.find("cache")->find("interval")->scalar, "5");
  BOOST_CHECK_EQUAL(merged.find("cache")->find("warmup")->scalar, "1");  // inherited
  BOOST_CHECK_EQUAL(merged.find("steps")->seq.size(), 1u);               // lists replace
  BOOST_CHECK_EQUAL(merged.find("steps")->seq[0].file, "top.yaml");

  // Switching the component's type drops the old component's keys.
  ConfigNode other =
      cachelab::parse_config_string("cache:\n  type: teacache\n  threshold: 0.1\n", "top.yaml");
  merged = base;
  cachelab::merge_config(merged, other);
  const ConfigNode& cache = *merged.find("cache");
  BOOST_CHECK_EQUAL(cache.find("type")->scalar, "teacache");
  BOOST_CHECK(cache.find("warmup") == nullptr);
  BOOST_CHECK(cache.find("interval") == nullptr);
  BOOST_CHECK_EQUAL(cache.find("threshold")->path, "cache.threshold");
  BOOST_CHECK_EQUAL(cache.find("threshold")->line, 3);

  // A subtree moved under another key gets the dotted path of its new place.
  ConfigNode root = ConfigNode::make_map();
  ConfigNode& slot = root.child("outer");
  cachelab::merge_config(slot, base);
  BOOST_CHECK_EQUAL(root.find("outer")->find("cache")->find("warmup")->path, "outer.cache.warmup");
  BOOST_CHECK_EQUAL(root.find("outer")->find("steps")->seq[2].path, "outer.steps.2");
}

// A variant whose name has dots (`fbcache_t0.05`) is reached by the longest existing key or
// quoted in brackets; an override never adds a variant, and a typo lists the variants.
BOOST_AUTO_TEST_CASE(overrides_reach_variants_with_dots) {
  const char* text =
      "variants:\n  fbcache_t0.05: {cache: {type: fbcache, threshold: 0.05}}\n"
      "  fbcache_t0.1: {cache: {type: fbcache, threshold: 0.1}}\n  fora: {cache: {type: fora}}\n";
  ConfigNode root = cachelab::parse_config_string(text, "exp.yaml");
  auto threshold = [&](const char* v) { return root.find("variants")->find(v)->find("cache")->find("threshold"); };
  cachelab::apply_override(root, "variants.fbcache_t0.05.cache.threshold=0.06");
  BOOST_CHECK_EQUAL(threshold("fbcache_t0.05")->scalar, "0.06");
  BOOST_CHECK_EQUAL(threshold("fbcache_t0.05")->path, "variants.fbcache_t0.05.cache.threshold");
  BOOST_CHECK_EQUAL(threshold("fbcache_t0.1")->scalar, "0.1");
  cachelab::apply_override(root, "variants[fbcache_t0.1].cache.threshold=0.2");
  BOOST_CHECK_EQUAL(threshold("fbcache_t0.1")->scalar, "0.2");
  cachelab::apply_override(root, "variants.fora.cache.interval=3");
  BOOST_CHECK_EQUAL(root.find("variants")->find("fora")->find("cache")->find("interval")->scalar, "3");
  BOOST_CHECK_EQUAL(root.find("variants")->map.size(), 3u);

  std::string msg = error_of([&] { cachelab::apply_override(root, "variants.fbcache_t0.5.cache.threshold=1"); });
  CHECK_CONTAINS(msg, "no variant `fbcache_t0`; variants: fbcache_t0.05, fbcache_t0.1, fora");
  msg = error_of([&] { cachelab::apply_override(root, "variants[fbcache_t0.05.cache.threshold=1"); });
  CHECK_CONTAINS(msg, "without its `]`");
  msg = error_of([&] { cachelab::apply_override(root, "variants[fora]cache=1"); });
  CHECK_CONTAINS(msg, "a `.` after `]`");
}

BOOST_AUTO_TEST_CASE(overrides) {
  ConfigNode root = cachelab::parse_config_string(
      "cache:\n  type: fora\n  interval: 2\nsteps: 50\nclaims:\n  - left: a\n", "exp.yaml");

  cachelab::apply_override(root, "cache.interval=3");
  const ConfigNode& interval = *root.find("cache")->find("interval");
  BOOST_CHECK_EQUAL(interval.scalar, "3");
  BOOST_CHECK_EQUAL(interval.file, "<command line>");
  BOOST_CHECK_EQUAL(interval.line, 0);
  BOOST_CHECK_EQUAL(interval.path, "cache.interval");
  BOOST_CHECK_EQUAL(interval.where(), "<command line>, key `cache.interval`");

  cachelab::apply_override(root, "steps=[10, 20]");
  const ConfigNode& steps = *root.find("steps");
  BOOST_REQUIRE(steps.is_seq());
  BOOST_CHECK_EQUAL(steps.seq.size(), 2u);
  BOOST_CHECK_EQUAL(steps.seq[1].scalar, "20");
  BOOST_CHECK_EQUAL(steps.seq[1].path, "steps.1");

  cachelab::apply_override(root, "lr=0.1");
  BOOST_CHECK_EQUAL(root.find("lr")->scalar, "0.1");

  cachelab::apply_override(root, "metrics.fid.samples=100");
  const ConfigNode* samples = root.find("metrics")->find("fid")->find("samples");
  BOOST_REQUIRE(samples);
  BOOST_CHECK_EQUAL(samples->scalar, "100");
  BOOST_CHECK_EQUAL(samples->path, "metrics.fid.samples");

  cachelab::apply_override(root, "claims.0.left=b");
  BOOST_CHECK_EQUAL(root.find("claims")->seq[0].find("left")->scalar, "b");

  // Changing only the type keeps the other keys: the reader then names the leftovers.
  cachelab::apply_override(root, "cache.type=fbcache");
  BOOST_CHECK_EQUAL(root.find("cache")->find("type")->scalar, "fbcache");
  BOOST_CHECK(root.find("cache")->find("interval") != nullptr);

  std::string msg = error_of([&] { cachelab::apply_override(root, "cache.interval"); });
  CHECK_CONTAINS(msg, "override `cache.interval` has no `=`");
  msg = error_of([&] { cachelab::apply_override(root, "=3"); });
  CHECK_CONTAINS(msg, "empty key");
  msg = error_of([&] { cachelab::apply_override(root, "cache..interval=3"); });
  CHECK_CONTAINS(msg, "empty part");
  msg = error_of([&] { cachelab::apply_override(root, "steps.x=3"); });
  CHECK_CONTAINS(msg, "is a list of 2 items");
  msg = error_of([&] { cachelab::apply_override(root, "lr.x=3"); });
  CHECK_CONTAINS(msg, "not a map");
  msg = error_of([&] { cachelab::apply_override(root, "steps=[1,"); });
  CHECK_CONTAINS(msg, "not valid YAML");
}

BOOST_AUTO_TEST_CASE(strict_reader_unknown_key) {
  ConfigNode root = cachelab::parse_config_string(
      "cache:\n  type: fora\n  interval: 3\n  intervall: 4\n", "exp.yaml");
  std::string msg =
      error_of([&] { cachelab::read_options<FewOptions>(*root.find("cache"), "cache `fora`"); });
  CHECK_CONTAINS(msg,
                 "exp.yaml:4: unknown key `cache.intervall` for cache `fora` "
                 "(did you mean `interval`?); valid keys: interval, threshold, enabled");

  // A component with no options says so.
  msg = error_of([&] { cachelab::read_options<NoOptions>(*root.find("cache"), "cache `none`"); });
  CHECK_CONTAINS(msg, "cache `none` takes no options");

  // Several leftovers are all named.
  ConfigNode two =
      cachelab::parse_config_string("a: 1\ninterval: 3\nthreshhold: 2\nzzz: 1\n", "x.yaml");
  msg = error_of([&] { cachelab::read_options<FewOptions>(two, ""); });
  CHECK_CONTAINS(msg, "x.yaml:1: unknown key `a`");
  CHECK_CONTAINS(msg, "`threshhold` (line 3) (did you mean `threshold`?)");
  CHECK_CONTAINS(msg, "`zzz` (line 4)");
}

BOOST_AUTO_TEST_CASE(strict_reader_types) {
  ConfigNode root = cachelab::parse_config_string(
      "cache:\n"
      "  type: fora\n"
      "  flag: yes\n"
      "  interval: 7\n"
      "  big: 12345678901\n"
      "  threshold: 1\n"
      "  name: taylor\n"
      "  steps: 4\n"
      "  weights: [1, 0.25]\n"
      "  sites: [blocks.0, blocks.1]\n",
      "exp.yaml");
  AllOptions o = cachelab::read_options<AllOptions>(*root.find("cache"), "cache `fora`");
  BOOST_CHECK(o.flag);
  BOOST_CHECK_EQUAL(o.interval, 7);
  BOOST_CHECK_EQUAL(o.big, 12345678901LL);
  BOOST_CHECK_EQUAL(o.threshold, 1.0);  // doubles accept integers
  BOOST_CHECK_EQUAL(o.name, "taylor");
  BOOST_CHECK(o.steps == std::vector<int>{4});  // a scalar is a one-element list
  BOOST_CHECK(o.weights == (std::vector<double>{1.0, 0.25}));
  BOOST_CHECK(o.sites == (std::vector<std::string>{"blocks.0", "blocks.1"}));

  // Missing keys keep their defaults.
  ConfigNode partial = cachelab::parse_config_string("type: fora\ninterval: 4\n", "p.yaml");
  FewOptions f = cachelab::read_options<FewOptions>(partial, "cache `fora`");
  BOOST_CHECK_EQUAL(f.interval, 4);
  BOOST_CHECK_EQUAL(f.threshold, 0.1);
  BOOST_CHECK(f.enabled);

  auto read_few = [](const std::string& yaml) {
    ConfigNode n = cachelab::parse_config_string(yaml, "exp.yaml");
    return error_of([&] { cachelab::read_options<FewOptions>(*n.find("cache"), "cache `fora`"); });
  };
  std::string msg = read_few("cache:\n  type: fora\n\n\n\n\n  interval: three\n");
  BOOST_CHECK_EQUAL(msg.substr(0, msg.find('\n')),
                    "exp.yaml:7: key `cache.interval`: expected an integer, got `three` "
                    "(cache `fora`)");
  msg = read_few("cache:\n  interval: 3.5\n");
  CHECK_CONTAINS(msg, "expected an integer, got `3.5`");
  msg = read_few("cache:\n  interval: 99999999999\n");
  CHECK_CONTAINS(msg, "expected an integer");
  msg = read_few("cache:\n  interval: [1, 2]\n");
  CHECK_CONTAINS(msg, "expected an integer, got a list");
  msg = read_few("cache:\n  interval:\n");
  CHECK_CONTAINS(msg, "expected an integer, got nothing");
  msg = read_few("cache:\n  enabled: maybe\n");
  CHECK_CONTAINS(msg, "exp.yaml:2: key `cache.enabled`: expected a bool");
  msg = read_few("cache:\n  threshold: low\n");
  CHECK_CONTAINS(msg, "key `cache.threshold`: expected a number, got `low`");

  ConfigNode lists = cachelab::parse_config_string("c:\n  steps:\n    - 1\n    - x\n", "l.yaml");
  msg = error_of([&] { cachelab::read_options<AllOptions>(*lists.find("c"), "cache `fora`"); });
  CHECK_CONTAINS(msg, "l.yaml:4: key `c.steps.1`: expected an integer, got `x`");

  ConfigNode scalar = cachelab::parse_config_string("cache: fora\n", "s.yaml");
  msg = error_of([&] { cachelab::read_options<FewOptions>(*scalar.find("cache"), "cache"); });
  CHECK_CONTAINS(msg, "s.yaml:1: key `cache`: expected a map of options, got `fora`");
}

BOOST_AUTO_TEST_CASE(writer_reader_round_trip) {
  AllOptions o;
  o.flag = true;
  o.interval = -3;
  o.big = std::numeric_limits<int64_t>::max();
  o.threshold = 0.1 + 0.2;  // needs 17 digits
  o.name = "a: b";          // needs quoting in YAML
  o.steps = {};
  o.weights = {1.0 / 3.0, -2.0, 1e-300, std::numeric_limits<double>::infinity()};
  o.sites = {"blocks.7.attn", "null", ""};

  ConfigNode out = ConfigNode::make_map("cache");
  out.child("type") = ConfigNode::make_scalar("fora", "cache.type");
  cachelab::OptionWriter w(out);
  o.fields(w);
  BOOST_CHECK_EQUAL(out.find("flag")->scalar, "true");
  BOOST_CHECK_EQUAL(out.find("weights")->seq[1].scalar, "-2.0");
  BOOST_CHECK_EQUAL(out.find("weights")->seq[2].path, "cache.weights.2");
  BOOST_CHECK(out.find("steps")->is_seq());

  // Through text and back.
  ConfigNode parsed = cachelab::parse_config_string(cachelab::to_yaml(out), "resolved.yaml");
  AllOptions back = cachelab::read_options<AllOptions>(parsed, "cache `fora`");
  BOOST_CHECK_EQUAL(back.flag, o.flag);
  BOOST_CHECK_EQUAL(back.interval, o.interval);
  BOOST_CHECK_EQUAL(back.big, o.big);
  BOOST_CHECK_EQUAL(back.threshold, o.threshold);
  BOOST_CHECK_EQUAL(back.name, o.name);
  BOOST_CHECK(back.steps == o.steps);
  BOOST_CHECK(back.weights == o.weights);
  BOOST_CHECK(back.sites == o.sites);

  ConfigNode tenth = ConfigNode::make_map();
  cachelab::OptionWriter tenth_writer(tenth);
  tenth_writer("x", 0.1, "");
  BOOST_CHECK_EQUAL(tenth.find("x")->scalar, "0.1");
}

BOOST_AUTO_TEST_CASE(documenter) {
  AllOptions o;
  cachelab::OptionDocumenter d;
  o.fields(d);
  BOOST_REQUIRE_EQUAL(d.keys.size(), 8u);
  std::vector<std::string> types;
  for (const auto& k : d.keys) types.push_back(k.type);
  std::vector<std::string> expected = {"bool",   "int",       "int64",       "float",
                                       "string", "list[int]", "list[float]", "list[string]"};
  BOOST_CHECK(types == expected);
  BOOST_CHECK_EQUAL(d.keys[0].default_value, "false");
  BOOST_CHECK_EQUAL(d.keys[1].default_value, "2");
  BOOST_CHECK_EQUAL(d.keys[3].default_value, "0.1");
  BOOST_CHECK_EQUAL(d.keys[4].default_value, "copy");
  BOOST_CHECK_EQUAL(d.keys[5].default_value, "[1, 2]");
  BOOST_CHECK_EQUAL(d.keys[6].default_value, "[0.5]");
  BOOST_CHECK_EQUAL(d.keys[7].default_value, "[body]");
  BOOST_CHECK_EQUAL(d.keys[1].doc, "steps between full computations");
}

// A key added to a component later (declared with its unused value) is left out of the
// resolved config at that value, so the identity of runs that do not use it does not move;
// set, it is written, read back and documented like any key.
namespace {
struct Grown {
  int interval = 2;
  std::vector<std::string> parts = {"block"};
  cachelab::ComponentSpec inner{"cache", {}};
  template <class V>
  void fields(V& v) {
    v("interval", interval, "steps");
    v("parts", parts, "added later", std::vector<std::string>{"block"});
    v("inner", inner, "added later too", cachelab::ComponentSpec{"cache", {}});
  }
};
}  // namespace

BOOST_AUTO_TEST_CASE(a_key_added_later_is_left_out_at_its_unused_value) {
  Grown g;
  ConfigNode out = ConfigNode::make_map();
  cachelab::OptionWriter w(out);
  g.fields(w);
  BOOST_CHECK(out.find("interval") && !out.find("parts") && !out.find("inner"));
  g.parts = {"attn"};
  g.inner.node = cachelab::parse_config_string("type: fora\n", "x.yaml");
  ConfigNode set = ConfigNode::make_map();
  cachelab::OptionWriter w2(set);
  g.fields(w2);
  BOOST_REQUIRE(set.find("parts") && set.find("inner"));
  const auto back = cachelab::read_options<Grown>(set, "t");
  BOOST_CHECK(back.parts == g.parts);
  BOOST_CHECK(!back.inner.empty());
  cachelab::OptionDocumenter d;
  g.fields(d);
  BOOST_CHECK_EQUAL(d.keys.size(), 3u);
}

BOOST_AUTO_TEST_CASE(did_you_mean_cases) {
  using cachelab::did_you_mean;
  std::vector<std::string> keys = {"interval", "threshold", "warmup", "order", "cache_ratio"};
  BOOST_CHECK_EQUAL(did_you_mean("intervall", keys), " (did you mean `interval`?)");
  BOOST_CHECK_EQUAL(did_you_mean("treshold", keys), " (did you mean `threshold`?)");
  BOOST_CHECK_EQUAL(did_you_mean("xyzzy_plugh", keys), "");
  BOOST_CHECK_EQUAL(did_you_mean("ab", {"cd", "ef"}), "");  // total rewrite: no hint
  BOOST_CHECK_EQUAL(did_you_mean("fora", {"fora2", "foras", "teacache"}),
                    " (did you mean `fora2` or `foras`?)");
  BOOST_CHECK_EQUAL(did_you_mean("ddim", {"ddpm", "ddim2", "dpm", "euler", "ddim_x"}),
                    " (did you mean `ddpm`, `ddim2` or `dpm`?)");
  BOOST_CHECK_EQUAL(did_you_mean("anything", {}), "");
}

BOOST_AUTO_TEST_CASE(to_yaml_round_trip) {
  const std::string text =
      "name: demo\n"
      "empty: ~\n"
      "quoted: \"null\"\n"
      "colon: \"a: b\"\n"
      "cache:\n"
      "  type: fora\n"
      "  interval: 3\n"
      "  steps: [1, 2, 3]\n"
      "claims:\n"
      "  - left: fora\n"
      "    right: [x, {k: v}]\n"
      "  - plain\n"
      "nested:\n"
      "  deep:\n"
      "    deeper: {}\n"
      "    list: []\n";
  ConfigNode a = cachelab::parse_config_string(text, "a.yaml");
  std::string emitted = cachelab::to_yaml(a);
  ConfigNode b = cachelab::parse_config_string(emitted, "b.yaml");
  BOOST_CHECK_EQUAL(cachelab::to_yaml(b), emitted);  // a fixed point
  BOOST_CHECK(b.find("empty")->is_null());
  BOOST_CHECK(b.find("quoted")->is_scalar());
  BOOST_CHECK_EQUAL(b.find("quoted")->scalar, "null");
  BOOST_CHECK_EQUAL(b.find("colon")->scalar, "a: b");
  BOOST_CHECK(a.keys() == b.keys());
  BOOST_CHECK_EQUAL(b.find("claims")->seq[0].find("right")->seq[1].find("k")->path,
                    "claims.0.right.1.k");
  BOOST_CHECK(b.find("nested")->find("deep")->find("deeper")->is_map());
  BOOST_CHECK(b.find("nested")->find("deep")->find("list")->is_seq());
  // Block style: no flow braces around non-empty maps or lists.
  BOOST_CHECK(emitted.find("[1, 2, 3]") == std::string::npos);
  CHECK_CONTAINS(emitted, "cache:\n  type: fora\n  interval: 3\n");
}

BOOST_AUTO_TEST_CASE(error_message_shape) {
  // The message is what a user reads; where it was raised is kept apart (CACHELAB_DEBUG=1).
  try {
    CL_CHECK(1 + 1 == 3, "arithmetic is off by " << 1);
    BOOST_ERROR("expected an error");
  } catch (const cachelab::Error& e) {
    BOOST_CHECK_EQUAL(std::string(e.what()), "arithmetic is off by 1");
    BOOST_CHECK_EQUAL(e.origin().rfind("check `1 + 1 == 3` failed at ", 0), 0u);
    CHECK_CONTAINS(e.origin(), "test_config.cpp:");
  }
  try {
    CL_FAIL("plain failure");
  } catch (const cachelab::Error& e) {
    BOOST_CHECK_EQUAL(std::string(e.what()), "plain failure");
    BOOST_CHECK_EQUAL(e.origin().rfind("raised at ", 0), 0u);
  }
}

BOOST_AUTO_TEST_SUITE_END()
