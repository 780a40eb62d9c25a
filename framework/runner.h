// The runner: one trajectory of a backbone + sampler under a cache policy, with every
// step and site recorded, measured against the reference trajectory of the same seed.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "caches/cache_policy.h"
#include "framework/recorder.h"
#include "framework/run_options.h"
#include "models/backbone.h"
#include "models/sampler.h"

namespace cachelab {


// What a reference trajectory leaves for its variants to be measured against.
struct ReferenceTrace {
  std::vector<at::Tensor> x_after_step;           // [T] batch 0 sample after each step
  std::vector<std::vector<at::Tensor>> probe;     // [T][P] site outputs on the probe samples
  at::Tensor samples;                             // [N, C, H, W] final samples, all batches
  double wall_s = 0, flops = 0;
};

struct Trajectory {
  at::Tensor samples, labels;        // [N, C, H, W] in [-1, 1]; [N] int64 classes asked for
  std::vector<StepRecord> steps;     // batch 0 (site-level data) with wall/flops summed over batches
  double wall_s = 0, flops = 0;
  int failed_step = -1;              // first step whose sample went non-finite, -1 if none
  std::string error;
};

// Runs all batches. `ref` (may be null) is what errors are measured against;
// `capture` (may be null) receives this run's trace (for the reference run).
Trajectory run_trajectory(Backbone& backbone, const Sampler& sampler, CachePolicy& policy, const RunOptions& run,
                          const ReferenceTrace* ref, ReferenceTrace* capture);

// The classes asked for: sample i asks for class i % num_classes.
at::Tensor sample_labels(int n, int num_classes);

void save_reference(const ReferenceTrace& trace, const std::string& path);
bool load_reference(ReferenceTrace& trace, const std::string& path);  // false if missing/unreadable

}  // namespace cachelab
