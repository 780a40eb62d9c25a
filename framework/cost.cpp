#include "framework/cost.h"

#include <algorithm>

namespace cachelab {

RunCost scale_cost(const UnitCost& u, const RunOptions& ro, bool is_reference) {
  const double N = double(ro.samples), B = double(std::min(ro.batch, ro.samples));
  RunCost c;
  c.flops = N * u.flops;
  c.seconds = N * u.seconds;
  if (!is_reference && ro.timing_reps > 0) c.seconds += 2.0 * ro.timing_reps * std::min(double(ro.timing_samples), B) * u.seconds;
  // The batches' outputs and their concatenation; activations: every site's output for one
  // batch (guidance doubles it), three times over for a cache's copies and a layer's temporaries.
  const double guided = ro.cfg_scale != 1.0 ? 2.0 : 1.0;
  c.memory_bytes = 2 * N * u.sample_bytes + 3 * guided * B * u.site_out_bytes;
  // The probe holds the first probe_samples rows of each site's output (both halves under guidance).
  c.reference_bytes = N * u.sample_bytes + B * u.xstep_bytes + std::min(double(ro.probe_samples), guided * B) * u.probe_bytes;
  c.weights_bytes = u.weights_bytes;
  c.file_bytes = 2 * std::min(double(ro.save_samples), N) * u.sample_bytes + u.steps * u.sites * 8 * 6 + 65536;
  return c;
}

}  // namespace cachelab
