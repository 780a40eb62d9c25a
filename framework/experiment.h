// An experiment file expanded into the runs it asks for, every config checked before
// anything runs. Torch-free.
//
//   name: quickstart                 # default: the file's stem
//   base: [presets/dit-mnist.yaml]   # presets composed first (see config.h)
//   seed: 0
//   backbone: {type: dit, ...}       sampler: {type: ddim, steps: 50}
//   cache: {type: none}              # what every variant starts from
//   run: {samples: 64, batch: 64, cfg_scale: 1.5, ...}
//   reference_ops: [{type: rolling_kv, window: 100000}]  # what references run: default none;
//                                    # an exact K/V cache makes long AR video rollouts affordable
//   reference_run: {dtype: float32}  # what references run in (dtype, device): default the run's
//   metrics: [psnr, ssim, fid, accuracy]
//   judge: models/weights/lenet-mnist.safetensors
//   variants: {fora_n2: {cache: {type: fora, interval: 2}}, fb: {cache.type: fbcache}}
//   sweep: {cache.interval: [2, 3, 4]}   # grid over every variant, last key fastest
//   claims: [{left: fora_n2, metric: psnr, op: ">", right: fora_n4}]
//   calibration: {seed: 7, samples: 16, batch: 16}  # calibration files are artefacts made on
//                                    # demand (see Artefact); sweepable: calibration.seed: [7, 8, 9]
#pragma once
#include <string>
#include <vector>

#include "framework/config.h"

namespace cachelab {

// A file a run reads that is fitted from the model (a calibration table, a quantizer's ranges):
// in an experiment with a top-level `calibration:` map, every `calibration:` / `table:` file
// named in the cache and ops components is an artefact name. The run reads the artefact at
// <results>/artefacts/<name's stem>-<identity><name's extension>; the identity hashes the
// config that fits it (its maker run with the calibration's seed, samples and batch) and the
// files it reads, so a changed input makes a new artefact. The maker is the first run of the
// experiment that names it under those calibration settings (runs naming the same file share
// it, as the author wrote); framework/artefacts.h makes missing ones on demand.
//
// A `schedule` cache with a `scheduler:` is an artefact too (kind "schedule"): its schedule is
// made from a profile of the run's reference on the calibration seed (itself an artefact,
// shared by every scheduler that reads the same profile); `recipe` holds what makes both.
//
// An `l2c` cache with a `train:` map (a router trainer: framework/router_trainer.h) reads a
// router trained on demand (kind "router") for the run's backbone and sampler, whatever the
// run's seed; it needs no `calibration:` map (the trainer has its own seed).
struct Artefact {
  std::string name;      // the file name the experiment wrote (`results/calib/qandc-w6a6.safetensors`)
  std::string path;      // where it is stored (`results/artefacts/qandc-w6a6-1a2b3c4d.safetensors`)
  std::string identity;  // 8 hex digits
  std::string maker;     // name of the run whose calibration fits it (the first run needing it)
  std::string kind = "calibration";  // calibration | schedule | router
  ConfigNode recipe;     // schedule: {scheduler, profile: {path, samples, lags, rates}, reference};
                         // router: {trainer, backbone, sampler}
};

struct RunSpec {
  std::string name;            // variant name ("reference" for a reference run)
  std::string overrides;       // canonical "key=value; ..." text the run id is hashed from
  ConfigNode config;           // the run's full config (backbone, sampler, cache, run, ...)
  std::string resolved_yaml;   // every component's options with defaults written out
  std::string run_id;          // stable: sanitized name + hash of the overrides
  std::string reference_id;    // run id of the reference this run is measured against
  std::string files;           // "path=digest;..." of the files it reads (weights, calibrations)
  bool is_reference = false;
  std::vector<Artefact> artefacts;  // what it reads that `run` makes on demand (see Artefact)
  ConfigNode calibration_config;    // a maker's calibration run: its config with the calibration's
                                    // seed, samples and batch (Null when it makes no artefact)
};

struct ExperimentSpec {
  std::string name, file;
  std::string config_yaml;          // the experiment as loaded (bases and CLI overrides applied)
  std::vector<RunSpec> references;  // one per distinct (backbone, sampler, seed, samples, batch, cfg)
  std::vector<RunSpec> runs;        // the variants x grid points, in a fixed order
  std::string claims_json;
  ConfigNode judge;                 // the judge (an evaluator component map), resolved
};

// Loads, composes and validates. Every error names file, line, dotted key and what is valid.
// Artefacts are stored under <results_root>/artefacts.
ExperimentSpec load_experiment(const std::string& file, const std::vector<std::string>& cli_overrides,
                               const std::string& results_root = "results");

// Whether run `name` (e.g. `fora_n2[seed=0]`) is selected by --only values (`fora_n2` or the
// full name); an empty list selects everything.
bool selected_by(const std::string& name, const std::vector<std::string>& only);
// Checks that every --only value names a variant of the experiment (else an error listing them).
void check_only(const ExperimentSpec& spec, const std::vector<std::string>& only);

// A run's name without the `seed=` and `calibration.seed=` entries of its sweep point:
// `fora_n2[seed=1]` -> `fora_n2`, `fora[cache.interval=2,seed=1]` -> `fora[cache.interval=2]`,
// `ptq[calibration.seed=8,seed=1]` -> `ptq`, `cache.interval=2,seed=1` -> `cache.interval=2`
// (what a claim names to mean the variant across seeds).
std::string without_seed(const std::string& name);
// A run's name without the entries of its sweep point that start with one of `prefixes`.
std::string drop_items(const std::string& name, const std::vector<std::string>& prefixes);

// A `metrics:` list entry as a component map: `psnr` -> {type: psnr}.
ConfigNode metric_spec(const ConfigNode& entry);

// 8 hex digits of a 64-bit FNV-1a hash.
std::string short_hash(const std::string& text);

}  // namespace cachelab
