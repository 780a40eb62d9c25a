// The summary values of a run that need no tensors (written as the run file's /summary
// attributes): interleaved timings -> wall-clock speedup with its spread, the reuse
// fraction of the decisions. Torch-free.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "framework/recorder.h"

namespace cachelab {

// Linear-interpolated quantile of v (f in [0, 1]); v must not be empty.
double quantile(std::vector<double> v, double f);

// speedup_wall (median of the per-repetition ratios reference / variant), its q25, q75,
// min, max and timing_reps; then speedup_wall_suspect: 1 when even the lower quartile is
// more than 5% above speedup_flops (which must already be in `summary`).
void add_timing_summary(std::map<std::string, double>& summary, const std::vector<double>& reference_s,
                        const std::vector<double>& variant_s);

// reuse_fraction: reused or predicted site calls / site calls visited (skipped ones excluded).
double reuse_fraction(const std::vector<StepRecord>& steps);

// The largest per-step sum over sites of site extra `extra` (NaN entries skipped): K/V caches'
// kv_bytes summed over layers -> the peak K/V memory of a batch. -1 when extra < 0.
double peak_site_extra_sum(const std::vector<StepRecord>& steps, int extra);

}  // namespace cachelab
