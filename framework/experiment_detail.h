// Internals of load_experiment (framework/experiment.cpp) that the artefacts' naming
// (framework/artefact_names.cpp) shares. Torch-free; not for components.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "framework/experiment.h"

namespace cachelab::detail {

// `calibration:` at the top level: how the runs that fit a run's artefacts sample.
struct CalibrationOptions {
  int64_t seed = 7;
  int samples = 0, batch = 0;
  template <class V>
  void fields(V& v) {
    v("seed", seed, "seed of the calibration runs (keep it apart from the evaluation seeds)");
    v("samples", samples, "samples of a calibration run (0: the run's samples)");
    v("batch", batch, "samples per forward pass of a calibration run (0: the run's batch)");
  }
  template <class C>
  void check(C& c) const {
    c.require(samples >= 0, "samples", "must be >= 0 (0: the run's samples)");
    c.require(batch >= 0, "batch", "must be >= 0 (0: the run's batch)");
  }
};

struct Resolved {
  std::string yaml;
  std::string reference_key;
  std::string files, reference_files;  // "path=digest;..." of the files each reads
};

// A config value on one line (a map's YAML with its newlines as spaces).
std::string trimmed_yaml(const ConfigNode& n);
// Digests of every file a resolved config names (weights, calibration tables): a string
// value that names an existing regular file under the project root or absolute.
void collect_files(const ConfigNode& n, std::string& out);
// `files` ("path=digest;...") without the entries of `paths`.
std::string without_files(const std::string& files, const std::vector<std::string>& paths);
// Checks every component and key of one run's config; returns its resolved YAML.
Resolved resolve_run(const ConfigNode& cfg);

// `text` (a resolved config) with the artefact folder written as results/reproduce/artefacts,
// where tools/reproduce.sh stores them: run ids and artefact identities hash this, so they do
// not depend on `--results` (the committed summaries were made there).
std::string root_free(const std::string& text, const std::string& artefact_dir);

// Turns what a run reads that `run` makes on demand into artefacts (see Artefact in
// experiment.h): the calibration files its components name, the schedules its schedulers
// make, the routers its `train:` maps train. Each name is rewritten to its stored path
// under `artefact_dir`; `makers` (name + calibration settings -> artefact) is shared by the
// runs of one experiment. Returns the stored paths.
std::vector<std::string> adopt_artefacts(RunSpec& run, std::map<std::string, Artefact>& makers,
                                         const std::string& artefact_dir);

}  // namespace cachelab::detail
