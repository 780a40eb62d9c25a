// Executes an experiment: references first, then every run, one run file each;
// resumes (skips runs whose file says done), splits work over parallel processes.
#pragma once
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "framework/cost.h"
#include "framework/experiment.h"

namespace cachelab {

class SiteLayer;

struct SweepOptions {
  std::string results_root = "results";  // run files go to <results_root>/<experiment>/
  int jobs = 1;             // parallel worker processes (the cores are split between them)
  int index = -1;           // run only grid point i (a Slurm array task); -1 = all
  int reference = -1;       // run only reference i and no variant (a --slurm references task); -1 = off
  int worker = -1;          // internal: this process is worker k of `workers`
  int workers = 1;
  int threads = 0;          // > 0 overrides run.threads
  bool force = false;       // redo runs that are already done
  double max_hours = 24;    // preflight refuses a process's share of the sweep estimated longer (0 = no limit)
  std::vector<std::string> only;  // run only these variant names
  std::string exe;          // path of the cachelab binary (to start workers)
  std::vector<std::string> cli_overrides;
};

// What a run did: finished (done now or before), failed, or left to the process that
// holds its lock (or its reference's).
enum class RunOutcome { Done, Failed, Busy };

// What one run will cost at most, from a one-sample reference trajectory timed on this
// machine (preflight). Caching variants cost less.

// One process's runs of an experiment: built backbones, loaded references, the judge
// (framework/session.cpp). The sweep logic (framework/sweep.cpp) drives it.
class RunSession {
 public:
  RunSession(const ExperimentSpec& spec, const SweepOptions& options);
  ~RunSession();
  const std::string& dir() const;  // <results_root>/<experiment>
  std::string system_line() const;  // threads, BLAS, LibTorch (+ a slow-BLAS warning)
  // Builds a run's components and binds them to the backbone's sites (fails early).
  void prepare(const RunSpec& run);
  // Runs (or skips, when its file says done) one run under its lock. `after_wait`: the run
  // was busy before; a file another process finished meanwhile (done or failed) is taken
  // as it is, even with --force.
  RunOutcome execute(const RunSpec& run, bool after_wait = false);
  // Makes sure the reference `run` is measured against is available (runs it if needed);
  // false when another process holds it.
  bool reference(const RunSpec& run);
  // Preflight: what `run` will cost (measured once per backbone and schedule).
  RunCost cost(const RunSpec& run);
  // Calibrates the run's components unless their files are in `written`.
  bool calibrate(const RunSpec& run, std::set<std::string>& written);
  // Makes the artefacts `run` reads that are missing (framework/artefacts.h); how many.
  int make_artefacts(const RunSpec& run);
  // Runs `run` (its first `samples` samples, in one batch, when > 0) with `outer` stacked
  // outside its layers, writing nothing: what `cachelab profile` observes through.
  void observe(const RunSpec& run, SiteLayer& outer, int samples);

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Returns the process exit code: 0 when every run asked for is done, 1 otherwise.
int execute_experiment(const ExperimentSpec& spec, const SweepOptions& options);

// `cachelab calibrate`: runs each run that has a calibratable component (a corrector's
// table, a quantizer's scales) once in calibration mode and writes its file; in an experiment
// with a `calibration:` map, makes the selected runs' missing artefacts instead (what `run`
// would make on demand). Returns the number of runs calibrated (artefacts made).
int calibrate_experiment(const ExperimentSpec& spec, const SweepOptions& options);

// Builds every backbone (weights are read), every run's components, and binds them to
// the backbone's sites, running nothing: what `validate` checks beyond the config.
void preflight_experiment(const ExperimentSpec& spec, const SweepOptions& options);

}  // namespace cachelab
