// Preflight cost of a run: what one sample of its reference costs (measured once on a
// one-sample trajectory), scaled to the run's samples, batch, timing repetitions and probe.
// Torch-free.
#pragma once
#include "framework/run_options.h"

namespace cachelab {

struct RunCost {
  double flops = 0;            // FLOPs of the run's samples, every site computed
  double seconds = 0;          // at the measured speed, the timing repetitions included
  double memory_bytes = 0;     // the run's samples (batches and their concatenation) and activations
  double reference_bytes = 0;  // its reference's trajectory (kept in memory, and on disk in .cache/)
  double weights_bytes = 0;    // the backbone's parameters
  double file_bytes = 0;       // its run file
};

// What one sample of a reference costs, from a one-sample trajectory.
struct UnitCost {
  double flops = 0, seconds = 0;  // per sample, whole trajectory
  double sample_bytes = 0;        // one final sample
  double xstep_bytes = 0;         // one sample after every step (the reference's x_after_step)
  double probe_bytes = 0;         // one sample's site outputs at every step (the reference's probe)
  double site_out_bytes = 0;      // one sample's site outputs in one step
  double weights_bytes = 0;
  double steps = 0, sites = 0;
};

// The run's cost at `ro` from its unit cost (a reference skips the timing repetitions).
RunCost scale_cost(const UnitCost& u, const RunOptions& ro, bool is_reference);

}  // namespace cachelab
