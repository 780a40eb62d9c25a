// How a run samples: counts, batch, guidance, threads, logging caps (the `run:` map).
#pragma once
#include <cstdint>

namespace cachelab {

struct RunOptions {
  int64_t seed = 0;        // the experiment's top-level `seed`; batch b uses seed * 1000003 + b
  int samples = 64;        // samples generated per run
  int batch = 64;          // samples per forward pass (the last batch may be smaller)
  double cfg_scale = 1.5;  // classifier-free guidance; 1 = off (one forward per step)
  int threads = 1;         // intra-op threads (a sweep with --jobs N splits the cores)
  int probe_samples = 8;   // site-level drift/error use the first N samples of batch 0
  int save_samples = 16;   // final samples stored in the run file
  template <class V>
  void fields(V& v) {
    v("samples", samples, "samples generated per run");
    v("batch", batch, "samples per forward pass");
    v("cfg_scale", cfg_scale, "classifier-free guidance scale (1 = off)");
    v("threads", threads, "intra-op threads");
    v("probe_samples", probe_samples, "samples of batch 0 used for site-level drift and error");
    v("save_samples", save_samples, "final samples stored in the run file");
  }
};

}  // namespace cachelab
