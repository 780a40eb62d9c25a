// Profiling a backbone's uncached trajectory (`cachelab profile`): for every step and
// site, how far its output drifts from the previous step, and the reuse error -- the
// error at the model output if that site alone reused its output from k steps before
// (k = 0..lags; lag 0 reuses its own value and must give zero error). Schedules
// (framework/schedule.h) are built from it. The file schema is in results/README.md.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace cachelab {

struct ExperimentSpec;
struct SweepOptions;
struct RunSpec;
class SiteLayer;

struct ProfileOptions {
  int lags = 3;                     // reuse error for lags 0..lags
  int samples = 4;                  // samples profiled (one batch)
  std::vector<std::string> kinds;   // site kinds profiled; empty = every site but the model
  bool pairwise = true;             // the [S, T, T] distance between any two steps' site outputs
  std::vector<double> rates;        // token rates whose partial-reuse error is measured (empty = none)
  std::string output;               // default <results>/<experiment>/profiles/<reference>.h5
};

// A profile, as stored. NaN where a value does not exist (drift at step 0, a lag before
// step 0). Errors are relative L2: ||a - b|| / ||b|| over the whole batch.
struct Profile {
  std::string experiment, reference_run, backbone_digest, config_yaml;
  int samples = 0, lags = 0;
  std::vector<int64_t> t;                        // [T] model timestep
  std::vector<std::string> site_names, site_kinds;
  std::vector<int> site_index, site_block;       // [S] index in the backbone's site table, block
  std::vector<double> output_norm;               // [T] L2 norm of the model output
  std::vector<std::vector<double>> drift_cos, drift_rel_l1;  // [T][S] vs the previous step
  std::vector<std::vector<std::vector<double>>> reuse_output;  // [T][S][lags+1] at the model output
  std::vector<std::vector<std::vector<double>>> reuse_site;    // [T][S][lags+1] at the site's output
  std::vector<std::vector<std::vector<double>>> pairwise;      // [S][T][T] site output distance (or empty)
  // Token rates (DiffSparse): the model-output error when a token site recomputes only the
  // fraction `rates[r]` of its tokens (those whose input changed most since the step before)
  // and reuses the step before's output for the others. [T][S][R], NaN for non-token sites.
  std::vector<double> rates;
  std::vector<std::vector<std::vector<double>>> partial_output;
  int steps() const { return int(t.size()); }
};

void write_profile(const Profile& p, const std::string& path);
Profile read_profile(const std::string& path);

// Profiles one reference run into `path`: `observe(layer)` runs it with the profiling layer
// stacked outermost (RunSession::observe, on the profile's samples).
void profile_reference(const std::string& experiment, const RunSpec& ref, const ProfileOptions& options,
                       const std::function<void(SiteLayer&)>& observe, const std::string& path);

// Profiles the reference of each selected run of the experiment (one file per distinct
// reference); returns the files written.
std::vector<std::string> profile_experiment(const ExperimentSpec& spec, const SweepOptions& sweep,
                                            const ProfileOptions& options);

}  // namespace cachelab
