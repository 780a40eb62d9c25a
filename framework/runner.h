// The runner: one trajectory of a backbone under a pipeline, with the site layers the
// config names stacked around every site, every step and site recorded, and errors
// measured against the reference trajectory of the same seed.
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/pipeline.h"
#include "framework/recorder.h"
#include "framework/run_options.h"

namespace cachelab {

// What a reference trajectory leaves for its variants to be measured against.
struct ReferenceTrace {
  std::vector<at::Tensor> x_after_step;        // [T] batch 0 sample after each step
  std::vector<std::vector<at::Tensor>> probe;  // [T][P] site outputs on the probe samples
  at::Tensor samples;                          // all batches' final samples
  double wall_s = 0, flops = 0;
};

struct Trajectory {
  at::Tensor samples, labels;      // final samples (on the CPU, float32 or int64); [N] classes asked for
  at::Tensor truth;                // [N, ...] the data the samples should equal (AR video: Cond::frames), or undefined
  std::vector<StepRecord> steps;   // batch 0 (site-level data) with wall/flops summed over batches
  std::vector<RunContext::Extra> extras;  // what steps[i].site_extra / linear_extra hold
  double wall_s = 0, flops = 0;
  double forwards = 0;             // steps that ran a forward, summed over batches
  int64_t batches = 0;
  int failed_step = -1;            // first step whose sample went non-finite, -1 if none
  std::string error;
};

// Everything one run is made of (not owned).
struct RunParts {
  Backbone* backbone = nullptr;
  const Pipeline* pipeline = nullptr;
  const Sampler* sampler = nullptr;       // may be null for pipelines with their own schedule
  const Guidance* guidance = nullptr;
  std::vector<SiteLayer*> layers;         // outermost first (the recorder is added by the runner)
  Ops* ops = nullptr;                     // the ops chain; null = dense
  std::string backbone_digest;            // file_digest of the weights (RunContext::backbone_digest)
};

// Runs all batches. `ref` (may be null) is what errors are measured against; `capture`
// (may be null) receives this run's trace (for the reference run).
Trajectory run_trajectory(const RunParts& parts, const RunOptions& run, const ReferenceTrace* ref,
                          ReferenceTrace* capture);

void save_reference(const ReferenceTrace& trace, const std::string& path);
bool load_reference(ReferenceTrace& trace, const std::string& path);  // false if missing/unreadable

}  // namespace cachelab
