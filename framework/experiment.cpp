#include "framework/experiment.h"

#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "framework/error.h"
#include "framework/experiment_detail.h"
#include "framework/recorder.h"
#include "framework/registries.h"
#include "framework/run_options.h"
#include "framework/paths.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

// The keys an experiment file may have at its top level.
const std::vector<std::string> kTopKeys = {"name",  "description", "seed",    "backbone", "sampler",
                                           "pipeline", "guidance", "cache", "ops",     "run",
                                           "metrics", "judge",    "decoder", "variants", "sweep",   "claims",
                                           "reference_ops", "reference_run", "calibration"};

// A masked LM's decoding method (the `mdlm` pipeline's rule and its End-of-Text Prediction):
// references decode with the baseline, whatever a variant sets.
constexpr const char* kDecodingKeys[] = {"decoder", "end_of_text", "eos_id", "smooth_weight", "smooth_init", "smooth_growth",
                                         "threshold_decay"};

// The run settings `reference_run:` may change for the references: a variant in bfloat16 (or on
// another device) measured against a float32 reference.
const std::vector<std::string> kReferenceRunKeys = {"dtype", "device"};

struct SeedOption {
  int64_t seed = 0;
  template <class V>
  void fields(V& v) {
    v("seed", seed, "seed of the initial noise and the sampler noise");
  }
};

struct ClaimOptions {
  std::string text, left, metric, op, right, value, paper;
  double scale = 1.0;
  template <class V>
  void fields(V& v) {
    v("text", text, "the claim in words");
    v("left", left, "variant on the left side");
    v("metric", metric, "summary metric compared (psnr, fid, speedup_wall, ...)");
    v("op", op, "one of >, <, >=, <=");
    v("right", right, "variant on the right side (or give value)");
    v("value", value, "a number on the right side (or give right)");
    v("scale", scale, "with right: compare left with scale x right (e.g. 0.7: at least 30% less)");
    v("paper", paper, "what the paper reports for this claim (shown beside the measurement: paper: ... / here: ...)");
  }
};

// Sets `dotted` (a.b.c) in `root` to `value` with the merge rules of config.h.
void set_path(ConfigNode& root, const std::string& dotted, const ConfigNode& value) {
  ConfigNode* cur = &root;
  size_t start = 0;
  while (true) {
    size_t dot = dotted.find('.', start);
    std::string part = dotted.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    CL_CHECK(!part.empty(), value.where() << ": empty part in key `" << dotted << "`");
    CL_CHECK(cur->is_map() || cur->is_null(),
             value.where() << ": cannot set `" << dotted << "`: `" << cur->path << "` is not a map");
    cur = &cur->child(part);
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  ConfigNode holder = ConfigNode::make_map();
  ConfigNode base_holder = ConfigNode::make_map();
  base_holder.child("x") = *cur;
  holder.child("x") = value;
  merge_config(base_holder, holder);
  *cur = base_holder.child("x");
}

std::string sanitize(const std::string& s) {
  std::string out;
  for (char c : s) out += (std::isalnum((unsigned char)c) || c == '-' || c == '_' || c == '.') ? c : '_';
  return out.substr(0, 48);
}

}  // namespace

namespace detail {

std::string trimmed_yaml(const ConfigNode& n) {
  if (n.is_scalar()) return n.scalar;
  std::string s = to_yaml(n), out;
  for (char c : s) out += c == '\n' ? ' ' : c;
  while (!out.empty() && out.back() == ' ') out.pop_back();
  return out;
}

void collect_files(const ConfigNode& n, std::string& out) {
  if (n.is_scalar()) {
    if (n.scalar.find('/') == std::string::npos && n.scalar.find('.') == std::string::npos) return;
    const std::string p = resolve_path(n.scalar);
    std::error_code ec;
    if (!p.empty() && fs::is_regular_file(p, ec)) out += n.scalar + "=" + file_digest(p) + ";";
    return;
  }
  for (auto& kv : n.map) collect_files(kv.second, out);
  for (auto& item : n.seq) collect_files(item, out);
}

std::string without_files(const std::string& files, const std::vector<std::string>& paths) {
  std::string out;
  size_t start = 0;
  while (start < files.size()) {
    size_t end = files.find(';', start);
    if (end == std::string::npos) end = files.size();
    const std::string item = files.substr(start, end - start);
    const std::string path = item.substr(0, item.rfind('='));
    if (std::find(paths.begin(), paths.end(), path) == paths.end()) out += item + ";";
    start = end + 1;
  }
  return out;
}

Resolved resolve_run(const ConfigNode& cfg) {
  for (auto& k : cfg.keys())
    CL_CHECK(std::find(kTopKeys.begin(), kTopKeys.end(), k) != kTopKeys.end(),
             cfg.find(k)->where() << ": unknown top-level key `" << k << "`" << did_you_mean(k, kTopKeys)
                                  << "; valid: name, description, seed, backbone, sampler, pipeline, guidance, "
                                     "cache, ops, reference_ops, reference_run, run, metrics, judge, decoder, variants, sweep, "
                                     "claims, calibration");
  auto need = [&](const char* key) -> const ConfigNode& {
    const ConfigNode* n = cfg.find(key);
    CL_CHECK(n && n->is_map(), "experiment `" << cfg.file << "` needs a `" << key << ":` map with a `type:`");
    return *n;
  };
  ConfigNode out = ConfigNode::make_map();
  const ConfigNode* seed = cfg.find("seed");
  ConfigNode run_node = cfg.find("run") ? *cfg.find("run") : ConfigNode::make_map("run");
  out.child("seed") = seed ? *seed : ConfigNode::make_scalar("0", "seed");
  {
    // seed is an integer: reuse the strict reader on a one-key map.
    ConfigNode m = ConfigNode::make_map();
    if (seed) m.child("seed") = *seed;
    read_options<SeedOption>(m, "experiment");
  }
  out.child("backbone") = backbones().resolve(need("backbone"));
  auto with_default_type = [&](const char* key, const char* type) {
    ConfigNode n = cfg.find(key) ? *cfg.find(key) : ConfigNode::make_map(key);
    if (n.is_map() && !n.find("type")) n.child("type") = ConfigNode::make_scalar(type, std::string(key) + ".type");
    return n;
  };
  out.child("pipeline") = pipelines().resolve(with_default_type("pipeline", "image"));
  const bool image = out.child("pipeline").find("type")->scalar == "image";
  if (image || cfg.find("sampler")) out.child("sampler") = samplers().resolve(need("sampler"));
  out.child("guidance") = guidances().resolve(with_default_type("guidance", "cfg"));
  out.child("cache") = caches().resolve(with_default_type("cache", "none"));
  for (const char* key : {"ops", "reference_ops"})
    if (const ConfigNode* ops = cfg.find(key)) {
      CL_CHECK(ops->is_seq(), ops->where() << ": `" << key << "` must be a list of ops components (quantizers, K/V "
                                              "caches), each a map with a `type:`");
      ConfigNode& list = out.child(key);
      list.kind = ConfigNode::Kind::Seq;
      for (auto& o : ops->seq) list.seq.push_back(ops_layers().resolve(o));
    }
  auto resolved_run = [](const ConfigNode& node) {
    RunOptions ro = read_checked<RunOptions>(node, "run");
    ConfigNode r = ConfigNode::make_map("run");
    OptionWriter w(r);
    ro.fields(w);
    return r;
  };
  out.child("run") = resolved_run(run_node);
  // The references' run: the run with `reference_run`'s keys replaced (checked like `run`).
  ConfigNode ref_run = out.child("run");
  if (const ConfigNode* rr = cfg.find("reference_run")) {
    CL_CHECK(rr->is_map(), rr->where() << ": `reference_run` must be a map of run settings the references use "
                                          "instead of the variant's (keys: dtype, device)");
    ConfigNode merged = run_node;
    for (auto& [k, v] : rr->map) {
      CL_CHECK(std::find(kReferenceRunKeys.begin(), kReferenceRunKeys.end(), k) != kReferenceRunKeys.end(),
               v.where() << ": `reference_run` may set dtype and device (what a reference is measured in), not `" << k
                         << "`; other run settings are shared by a variant and its reference");
      merged.child(k) = v;
    }
    ref_run = resolved_run(merged);
    ConfigNode& keep = out.child("reference_run");
    keep = ConfigNode::make_map("reference_run");
    for (auto& kv : rr->map) keep.child(kv.first) = *ref_run.find(kv.first);
  }
  if (const ConfigNode* cal = cfg.find("calibration")) {
    CL_CHECK(cal->is_map(), cal->where() << ": `calibration` must be a map (seed, samples, batch) of the runs that fit "
                                            "the calibration files");
    const auto co = read_checked<CalibrationOptions>(*cal, "calibration");
    ConfigNode& keep = out.child("calibration");
    keep = ConfigNode::make_map("calibration");
    keep.child("seed") = ConfigNode::make_scalar(std::to_string(co.seed), "calibration.seed");
    keep.child("samples") = ConfigNode::make_scalar(co.samples ? std::to_string(co.samples) : out.child("run").find("samples")->scalar,
                                                    "calibration.samples");
    keep.child("batch") = ConfigNode::make_scalar(co.batch ? std::to_string(co.batch) : out.child("run").find("batch")->scalar,
                                                  "calibration.batch");
  }
  const ConfigNode* metrics_node = cfg.find("metrics");
  ConfigNode& mlist = out.child("metrics");
  mlist.kind = ConfigNode::Kind::Seq;
  if (metrics_node) {
    CL_CHECK(metrics_node->is_seq(), metrics_node->where() << ": `metrics` must be a list of metric names");
    for (auto& m : metrics_node->seq) mlist.seq.push_back(metrics().resolve(metric_spec(m)));
  }
  if (cfg.find("judge")) out.child("judge") = evaluators().resolve(with_default_type("judge", "lenet"));
  if (cfg.find("decoder")) out.child("decoder") = decoders().resolve(with_default_type("decoder", "sd_vae"));
  Resolved r;
  r.yaml = to_yaml(out);
  ConfigNode refkey = ConfigNode::make_map();
  refkey.child("seed") = out.child("seed");
  refkey.child("backbone") = out.child("backbone");
  if (out.find("sampler")) refkey.child("sampler") = out.child("sampler");
  refkey.child("pipeline") = out.child("pipeline");
  for (const char* k : kDecodingKeys) refkey.child("pipeline").erase(k);  // references decode with the pipeline's baseline
  refkey.child("guidance") = out.child("guidance");
  if (out.find("reference_ops")) refkey.child("ops") = out.child("reference_ops");
  refkey.child("run") = ref_run;
  for (const char* k : {"threads", "probe_samples", "save_samples", "timing_reps", "timing_samples"})
    refkey.child("run").erase(k);
  r.reference_key = to_yaml(refkey);
  collect_files(out, r.files);
  collect_files(refkey, r.reference_files);
  return r;
}

}  // namespace detail

using namespace detail;

std::string without_seed(const std::string& name) { return drop_items(name, {"seed=", "calibration.seed="}); }

std::string drop_items(const std::string& name, const std::vector<std::string>& prefixes) {
  const auto open = name.find('[');
  const bool bracket = open != std::string::npos && name.back() == ']';
  const std::string head = bracket ? name.substr(0, open) : "";
  const std::string point = bracket ? name.substr(open + 1, name.size() - open - 2) : name;
  std::string kept;
  size_t start = 0;
  while (start <= point.size()) {  // the point is `key=value,key=value`; seeds are plain integers
    size_t end = point.find(',', start);
    if (end == std::string::npos) end = point.size();
    const std::string item = point.substr(start, end - start);
    bool drop = false;
    for (auto& p : prefixes) drop |= item.rfind(p, 0) == 0;
    if (!drop) kept += (kept.empty() ? "" : ",") + item;
    start = end + 1;
  }
  if (!bracket) return kept;
  return kept.empty() ? head : head + "[" + kept + "]";
}

bool selected_by(const std::string& name, const std::vector<std::string>& only) {
  if (only.empty()) return true;
  const std::string base = name.substr(0, name.find('['));
  for (auto& o : only)
    if (o == name || o == base) return true;
  return false;
}

void check_only(const ExperimentSpec& spec, const std::vector<std::string>& only) {
  std::vector<std::string> names;
  for (auto& r : spec.runs) {
    const std::string base = r.name.substr(0, r.name.find('['));
    if (std::find(names.begin(), names.end(), base) == names.end()) names.push_back(base);
  }
  for (auto& o : only) {
    bool found = false;
    for (auto& r : spec.runs) found |= selected_by(r.name, {o});
    std::string list;
    for (auto& n : names) list += (list.empty() ? "" : ", ") + n;
    CL_CHECK(found, "--only `" << o << "` names no variant of `" << spec.file << "`" << did_you_mean(o, names)
                               << "; variants: " << (list.empty() ? "(none)" : list));
  }
}

ConfigNode metric_spec(const ConfigNode& entry) {
  if (!entry.is_scalar()) return entry;
  ConfigNode spec = ConfigNode::make_map(entry.path);
  spec.file = entry.file, spec.line = entry.line;
  spec.child("type") = entry;
  return spec;
}

std::string short_hash(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) h = (h ^ c) * 1099511628211ull;
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", (unsigned long long)h);
  return std::string(buf).substr(0, 8);
}

ExperimentSpec load_experiment(const std::string& file, const std::vector<std::string>& cli_overrides,
                               const std::string& results_root) {
  register_all();
  ExperimentSpec spec;
  spec.file = file;
  ConfigNode root = load_config(file, {project_root() + "/configs"});
  for (auto& o : cli_overrides) apply_override(root, o);
  spec.config_yaml = to_yaml(root);
  spec.name = root.find("name") ? root.find("name")->scalar : fs::path(file).stem().string();
  {
    // The judge of sample quality: an evaluator component (default: lenet-mnist).
    ConfigNode j = root.find("judge") ? *root.find("judge") : ConfigNode::make_map("judge");
    if (j.is_map() && !j.find("type")) j.child("type") = ConfigNode::make_scalar("lenet", "judge.type");
    spec.judge = evaluators().resolve(j);
  }

  if (const ConfigNode* cal = root.find("calibration")) {  // (checked here too when no run fits anything)
    CL_CHECK(cal->is_map(), cal->where() << ": `calibration` must be a map (seed, samples, batch) of the runs that fit "
                                            "the calibration files");
    read_checked<CalibrationOptions>(*cal, "calibration");
  }
  ConfigNode base = root;
  for (const char* k : {"variants", "sweep", "claims", "name", "description"}) base.erase(k);

  // Variants (name -> overrides), then the grid over each.
  std::vector<std::pair<std::string, std::vector<std::pair<std::string, ConfigNode>>>> variants;
  if (const ConfigNode* v = root.find("variants")) {
    CL_CHECK(v->is_map(), v->where() << ": `variants` must map names to overrides");
    for (auto& [name, ov] : v->map) {
      CL_CHECK(name != "reference", ov.where() << ": `reference` is reserved for the uncached run");
      CL_CHECK(ov.is_map() || ov.is_null(), ov.where() << ": a variant is a map of (dotted) keys to values");
      std::vector<std::pair<std::string, ConfigNode>> list;
      for (auto& [k, val] : ov.map) list.emplace_back(k, val);
      variants.emplace_back(name, list);
    }
  }
  if (variants.empty()) variants.push_back({"base", {}});
  std::vector<std::pair<std::string, std::vector<ConfigNode>>> grid;
  if (const ConfigNode* s = root.find("sweep")) {
    CL_CHECK(s->is_map(), s->where() << ": `sweep` must map dotted keys to lists of values");
    for (auto& [k, vals] : s->map) {
      CL_CHECK(vals.is_seq() && !vals.seq.empty(), vals.where() << ": sweep values must be a non-empty list");
      grid.emplace_back(k, vals.seq);
    }
  }
  size_t points = 1;
  for (auto& g : grid) points *= g.second.size();

  std::map<std::string, RunSpec> refs;  // reference key -> reference run
  std::map<std::string, Artefact> makers;  // artefact name + calibration settings -> artefact
  const std::string artefact_dir = (fs::path(results_root) / "artefacts").string();
  std::set<std::string> ids;
  for (auto& [vname, vover] : variants) {
    for (size_t p = 0; p < points; ++p) {
      auto over = vover;
      std::string name = vname, gname;
      size_t rem = p;
      std::vector<std::pair<std::string, ConfigNode>> picks(grid.size());
      for (size_t g = grid.size(); g-- > 0;) {  // last key varies fastest
        picks[g] = {grid[g].first, grid[g].second[rem % grid[g].second.size()]};
        rem /= grid[g].second.size();
      }
      for (auto& pk : picks) {
        over.push_back(pk);
        gname += (gname.empty() ? "" : ",") + pk.first + "=" + trimmed_yaml(pk.second);
      }
      if (!gname.empty()) name = (variants.size() == 1 && vname == "base") ? gname : vname + "[" + gname + "]";
      RunSpec run;
      run.name = name;
      run.config = base;
      for (auto& [k, val] : over) {
        set_path(run.config, k, val);
        run.overrides += (run.overrides.empty() ? "" : "; ") + k + "=" + trimmed_yaml(val);
      }
      const std::vector<std::string> stored = adopt_artefacts(run, makers, artefact_dir);
      // A run that fits nothing is the same under every calibration seed: it runs once, named
      // without one (claims pair each of its seeds with every calibration seed of the other side).
      const bool fits = std::any_of(run.artefacts.begin(), run.artefacts.end(),
                                    [](const Artefact& a) { return a.kind != "router"; });  // (a router has its own seed)
      if (!fits && gname.find("calibration.seed=") != std::string::npos) {
        run.name = drop_items(name, {"calibration.seed="});
        bool seen = false;
        for (auto& other : spec.runs) seen |= other.name == run.name;
        if (seen) continue;
      }
      Resolved r = resolve_run(run.config);
      run.resolved_yaml = r.yaml;
      // An artefact's identity is in its path; its digest is not part of the run's (it is made
      // after the run id is fixed, and differs across machines as every float result does).
      run.files = r.files = without_files(r.files, stored);
      // A run's identity: its resolved config (artefact paths root-free), the files it reads, the schema version.
      run.run_id = sanitize(run.name) + "-" +
                   short_hash(root_free(r.yaml, artefact_dir) + "|" + r.files + "|" + std::to_string(run_schema_version()));
      CL_CHECK(ids.insert(run.run_id).second, "two runs of `" << file << "` have the same id " << run.run_id);
      const std::string refid = "reference-" + short_hash(r.reference_key + "|" + r.reference_files + "|" +
                                                          std::to_string(run_schema_version()));
      run.reference_id = refid;
      if (!refs.count(r.reference_key)) {
        RunSpec ref;
        ref.name = "reference";
        ref.is_reference = true;
        ref.config = run.config;
        ref.config.erase("cache");
        ref.config.erase("ops");  // (long AR rollouts: it runs `reference_ops`, an exact K/V cache, if given)
        ref.config.erase("calibration");
        // `reference_run` (e.g. dtype: float32 for a bfloat16 variant) replaces those run settings.
        if (const ConfigNode* rr = ref.config.find("reference_run"); rr && rr->is_map()) {
          const ConfigNode settings = *rr;  // (child() below may move the map's nodes)
          for (auto& [k, v] : settings.map) ref.config.child("run").child(k) = v;
          ref.config.erase("reference_run");
        }
        // A masked LM's decoding rule is a method too: its reference is the baseline decoder.
        if (ConfigNode* pl = ref.config.find("pipeline"); pl && pl->is_map())
          for (const char* k : kDecodingKeys) pl->erase(k);
        ref.overrides = "(reference of " + run.name + ")";
        const Resolved rr = resolve_run(ref.config);
        ref.resolved_yaml = rr.yaml;
        ref.files = rr.files;
        ref.run_id = ref.reference_id = refid;
        refs.emplace(r.reference_key, ref);
        spec.references.push_back(ref);
      }
      // An experiment without variants whose cache is `none` is its references alone (one
      // per sweep point): an uncached run would repeat its reference.
      const bool implicit = variants.size() == 1 && vname == "base";
      const ConfigNode* cache = run.config.find("cache");
      const ConfigNode* type = cache ? cache->find("type") : nullptr;
      if (implicit && (!type || type->scalar == "none")) continue;
      spec.runs.push_back(run);
    }
  }

  // Claims: checked now, evaluated by the report.
  nlohmann::json claims = nlohmann::json::array();
  if (const ConfigNode* c = root.find("claims")) {
    CL_CHECK(c->is_seq(), c->where() << ": `claims` must be a list");
    // A claim names one run, or a variant across the seeds of a sweep over `seed` (the report
    // aggregates them): `fora_n2` stands for `fora_n2[seed=0]`, `fora_n2[seed=1]`, ...
    std::vector<std::string> names = {"reference"};
    for (auto& r : spec.runs) {
      names.push_back(r.name);
      const std::string across = without_seed(r.name);
      if (!across.empty() && std::find(names.begin(), names.end(), across) == names.end()) names.push_back(across);
    }
    for (auto& item : c->seq) {
      auto cl = read_options<ClaimOptions>(item, "claim");
      auto check_variant = [&](const std::string& v, const char* key) {
        CL_CHECK(std::find(names.begin(), names.end(), v) != names.end(),
                 item.where() << ": claim `" << key << "` names variant `" << v << "`, which this experiment does not run"
                              << did_you_mean(v, names));
      };
      check_variant(cl.left, "left");
      const std::vector<std::string> ops = {">", "<", ">=", "<="};
      CL_CHECK(std::find(ops.begin(), ops.end(), cl.op) != ops.end(),
               item.where() << ": claim op `" << cl.op << "` is not one of >, <, >=, <=");
      CL_CHECK(cl.right.empty() != cl.value.empty(), item.where() << ": a claim needs exactly one of `right` or `value`");
      nlohmann::json j = {{"text", cl.text}, {"left", cl.left}, {"metric", cl.metric}, {"op", cl.op}};
      CL_CHECK(cl.scale > 0 && (cl.scale == 1.0 || !cl.right.empty()),
               item.where() << ": claim `scale` must be > 0 and goes with `right` (left op scale x right)");
      if (!cl.right.empty()) {
        check_variant(cl.right, "right");
        j["right"] = cl.right;
        if (cl.scale != 1.0) j["scale"] = cl.scale;
      } else {
        try {
          j["value"] = std::stod(cl.value);
        } catch (...) {
          CL_FAIL(item.where() << ": claim `value` must be a number, got `" << cl.value << "`");
        }
      }
      if (!cl.paper.empty()) j["paper"] = cl.paper;
      claims.push_back(j);
    }
  }
  spec.claims_json = claims.dump();
  return spec;
}

}  // namespace cachelab
