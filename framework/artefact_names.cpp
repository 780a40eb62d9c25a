// Naming the artefacts of a run (see Artefact in framework/experiment.h): what it reads that
// `run` makes on demand, each with its identity, its stored path and what makes it.
#include <algorithm>
#include <filesystem>
#include <iomanip>
#include <sstream>

#include "framework/error.h"
#include "framework/experiment_detail.h"
#include "framework/paths.h"
#include "framework/recorder.h"
#include "framework/registries.h"
#include "framework/run_options.h"

namespace cachelab::detail {
namespace fs = std::filesystem;

namespace {

// The artefact names of a run: the calibration files its cache and ops components name
// (`calibration:`, `table:`, and a threshold_search's `file:`).
void artefact_nodes(ConfigNode& n, std::vector<ConfigNode*>& out) {
  const ConfigNode* type = n.find("type");
  const bool search = type && type->is_scalar() && type->scalar == "threshold_search";
  for (auto& [k, v] : n.map) {
    if ((k == "calibration" || k == "table" || (search && k == "file")) && v.is_scalar() && !v.scalar.empty())
      out.push_back(&v);
    else artefact_nodes(v, out);
  }
  for (auto& item : n.seq) artefact_nodes(item, out);
}

// The `schedule` caches (nested ones too) that make their schedule with a `scheduler`.
void scheduler_nodes(ConfigNode& n, std::vector<ConfigNode*>& out) {
  const ConfigNode* type = n.find("type");
  if (type && type->is_scalar() && type->scalar == "schedule" && n.find("scheduler")) out.push_back(&n);
  for (auto& kv : n.map) scheduler_nodes(kv.second, out);
  for (auto& item : n.seq) scheduler_nodes(item, out);
}

// A scheduler's schedule as an artefact: the profile of the run's reference on the calibration
// seed (`calibration_run` is the run with the calibration's settings), then the schedule; the
// cache's `file` is set to where it is stored.
void adopt_schedule(RunSpec& run, ConfigNode& node, const ConfigNode& calibration_run, const std::string& dir) {
  const ConfigNode cache = caches().resolve(node);  // defaults written out
  const Resolved ref = resolve_run(calibration_run);
  ConfigNode profile = ConfigNode::make_map("profile");
  for (const char* k : {"profile_samples", "profile_lags", "profile_rates"}) profile.child(k) = *cache.find(k);
  const std::string profile_id = short_hash(ref.reference_key + "|" + ref.reference_files + "|" + to_yaml(profile) + "|" +
                                            std::to_string(run_schema_version()));
  profile.child("path") = ConfigNode::make_scalar((fs::path(dir) / ("profile-" + profile_id + ".h5")).string());
  const ConfigNode& scheduler = *cache.find("scheduler");
  Artefact a;
  a.kind = "schedule";
  a.identity = short_hash(profile_id + "|" + to_yaml(scheduler));
  a.name = "schedule by " + scheduler.find("type")->scalar;
  a.path = (fs::path(dir) / ("schedule-" + scheduler.find("type")->scalar + "-k" + scheduler.find("computes")->scalar +
                             "-" + a.identity + ".yaml")).string();
  a.maker = run.name;
  a.recipe = ConfigNode::make_map("recipe");
  a.recipe.child("scheduler") = scheduler;
  a.recipe.child("profile") = profile;
  ConfigNode reference = calibration_run;  // what is profiled: the uncached reference of this run
  reference.erase("cache");
  reference.erase("ops");
  a.recipe.child("reference") = reference;
  node.child("file") = ConfigNode::make_scalar(a.path, node.path + ".file");
  run.artefacts.push_back(a);
}


std::string number_text(double v) {
  std::ostringstream s;
  s << std::setprecision(17) << v;
  return s.str();
}

// The `l2c` caches (nested ones too) whose router is trained on demand (`train:`).
void router_nodes(ConfigNode& n, std::vector<ConfigNode*>& out) {
  const ConfigNode* type = n.find("type");
  const ConfigNode* train = n.find("train");
  if (type && type->is_scalar() && type->scalar == "l2c" && train && !train->is_null()) out.push_back(&n);
  for (auto& kv : n.map) router_nodes(kv.second, out);
  for (auto& item : n.seq) router_nodes(item, out);
}

// A trained router as an artefact: trained for the run's backbone and sampler, whatever its
// seed and samples (every seed of a sweep shares it). The trainer's guidance and threads
// default to the run's, its full_every to the cache's; the cache's `router` is set to where
// it is stored.
void adopt_router(RunSpec& run, ConfigNode& node, const std::string& dir) {
  ConfigNode& train = node.child("train");
  CL_CHECK(train.is_map(), train.where() << ": `train` must be a router trainer's map, e.g. {type: l2c, lambda: 0.0003}"
                                            " (registered: l2c, harmonica)");
  const ConfigNode* run_node = run.config.find("run");
  const RunOptions ro = read_checked<RunOptions>(run_node ? *run_node : ConfigNode::make_map("run"), "run");
  if (!train.find("cfg_scale")) train.child("cfg_scale") = ConfigNode::make_scalar(number_text(ro.cfg_scale), train.path + ".cfg_scale");
  if (!train.find("threads")) train.child("threads") = ConfigNode::make_scalar(std::to_string(ro.threads), train.path + ".threads");
  if (const ConfigNode* f = node.find("full_every"); f && !train.find("full_every"))  // (trained where it routes)
    train.child("full_every") = *f;
  const ConfigNode trainer = router_trainers().resolve(train);
  CL_CHECK(run.config.find("backbone") && run.config.find("sampler"),
           node.where() << ": a router is trained for the run's backbone and sampler; the experiment has no `"
                        << (run.config.find("backbone") ? "sampler" : "backbone") << ":`");
  ConfigNode on = ConfigNode::make_map("recipe");
  on.child("trainer") = trainer;
  on.child("backbone") = backbones().resolve(*run.config.find("backbone"));
  on.child("sampler") = samplers().resolve(*run.config.find("sampler"));
  std::string files;
  collect_files(on, files);
  Artefact a;
  a.kind = "router";
  a.identity = short_hash(to_yaml(on) + "|" + files + "|" + std::to_string(run_schema_version()));
  const std::string type = trainer.find("type")->scalar;
  a.name = "router trained by " + type;
  a.path = (fs::path(dir) / ("router-" + type + "-" + a.identity + ".safetensors")).string();
  a.maker = run.name;
  a.recipe = on;
  node.child("router") = ConfigNode::make_scalar(a.path, node.path + ".router");
  if (std::find_if(run.artefacts.begin(), run.artefacts.end(), [&](const Artefact& x) { return x.path == a.path; }) ==
      run.artefacts.end())
    run.artefacts.push_back(a);
}

std::vector<std::string> stored_paths(const RunSpec& run) {
  std::vector<std::string> paths;
  for (auto& a : run.artefacts) paths.push_back(a.path);
  return paths;
}

}  // namespace

std::string root_free(const std::string& text, const std::string& artefact_dir) {
  const std::string from = artefact_dir + "/", to = "results/reproduce/artefacts/";
  if (from == to) return text;
  std::string out;
  size_t start = 0;
  for (size_t at; (at = text.find(from, start)) != std::string::npos; start = at + from.size())
    out += text.substr(start, at - start) + to;
  return out + text.substr(start);
}

// Calibration files: the first run naming one under its calibration settings is its maker
// and keeps its calibration run's config.
std::vector<std::string> adopt_artefacts(RunSpec& run, std::map<std::string, Artefact>& makers,
                                         const std::string& artefact_dir) {
  std::vector<ConfigNode*> nodes;
  if (run.config.find("calibration"))
    for (const char* k : {"cache", "ops"})
      if (ConfigNode* n = run.config.find(k)) artefact_nodes(*n, nodes);
  std::vector<ConfigNode*> schedules, routers;  // `schedule` caches with a scheduler, `l2c` ones with `train`
  if (ConfigNode* c = run.config.find("cache")) scheduler_nodes(*c, schedules), router_nodes(*c, routers);
  for (ConfigNode* n : routers) adopt_router(run, *n, artefact_dir);
  if (nodes.empty() && schedules.empty()) {
    run.config.erase("calibration");  // nothing is fitted: the settings are not part of the run
    return stored_paths(run);
  }
  CL_CHECK(schedules.empty() || run.config.find("calibration"),
           schedules[0]->where() << ": a `schedule` cache with a `scheduler` makes its schedule from a profile on the "
                                    "calibration seed: give the experiment a `calibration:` map (e.g. {seed: 7})");
  const ConfigNode* cal_node = run.config.find("calibration");
  CL_CHECK(cal_node->is_map(), cal_node->where() << ": `calibration` must be a map (seed, samples, batch) of the runs "
                                                    "that fit the calibration files");
  const auto co = read_checked<CalibrationOptions>(*cal_node, "calibration");
  const ConfigNode* run_node = run.config.find("run");
  const RunOptions ro = read_checked<RunOptions>(run_node ? *run_node : ConfigNode::make_map("run"), "run");
  const std::string settings = std::to_string(co.seed) + "|" + std::to_string(co.samples ? co.samples : ro.samples) +
                               "|" + std::to_string(co.batch ? co.batch : ro.batch);
  // The calibration run: this run with the calibration's seed, samples and batch.
  auto calibration_run = [&] {
    ConfigNode c = run.config;
    c.child("seed") = ConfigNode::make_scalar(std::to_string(co.seed), "calibration.seed");
    if (co.samples) c.child("run").child("samples") = ConfigNode::make_scalar(std::to_string(co.samples), "calibration.samples");
    if (co.batch) c.child("run").child("batch") = ConfigNode::make_scalar(std::to_string(co.batch), "calibration.batch");
    c.erase("calibration");
    return c;
  };
  // Names made by earlier runs first: this run's own artefacts hash their stored paths.
  std::vector<ConfigNode*> own;
  for (ConfigNode* n : nodes) {
    auto it = makers.find(n->scalar + "|" + settings);
    if (it == makers.end()) {
      own.push_back(n);
      continue;
    }
    if (std::find_if(run.artefacts.begin(), run.artefacts.end(), [&](const Artefact& a) { return a.path == it->second.path; }) ==
        run.artefacts.end())
      run.artefacts.push_back(it->second);
    n->scalar = it->second.path;
  }
  for (ConfigNode* n : schedules) adopt_schedule(run, *n, calibration_run(), artefact_dir);
  if (!own.empty()) {
    std::vector<std::string> names;
    for (ConfigNode* n : own) names.push_back(n->scalar);
    for (auto& a : run.artefacts) names.push_back(a.path);  // (their identity is in their path)
    const Resolved cr = resolve_run(calibration_run());
    const std::string basis =
        root_free(cr.yaml, artefact_dir) + "|" + without_files(cr.files, names) + "|" + std::to_string(run_schema_version());
    for (ConfigNode* n : own) {
      auto it = makers.find(n->scalar + "|" + settings);
      if (it == makers.end()) {  // (a name written twice in one run is one artefact)
        Artefact a;
        a.name = n->scalar;
        a.identity = short_hash(basis + "|" + a.name);
        const fs::path p(a.name);
        a.path = (fs::path(artefact_dir) / (p.stem().string() + "-" + a.identity + p.extension().string())).string();
        a.maker = run.name;
        it = makers.emplace(n->scalar + "|" + settings, a).first;
        run.artefacts.push_back(a);
      }
      n->scalar = it->second.path;
    }
    run.calibration_config = calibration_run();
  }
  return stored_paths(run);
}

}  // namespace cachelab::detail
