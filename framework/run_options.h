// How a run samples: counts, batch, guidance scale, device, threads, logging caps (the
// `run:` map).
#pragma once
#include <cstdint>
#include <string>

namespace cachelab {

struct RunOptions {
  int64_t seed = 0;        // the experiment's top-level `seed`; batch b uses seed * 1000003 + b
  int samples = 64;        // samples generated per run
  int batch = 64;          // samples per forward pass (the last batch may be smaller)
  double cfg_scale = 1.5;  // classifier-free guidance; 1 = off (one forward per step)
  std::string device = "cpu";     // cpu | cuda (or cuda:N)
  std::string dtype = "float32";  // float32 | bfloat16 | float16 (parameters and activations)
  int threads = 1;         // intra-op threads (a sweep with --jobs N splits the cores)
  int probe_samples = 8;   // site-level drift/error use the first N samples of batch 0
  int save_samples = 16;   // final samples stored in the run file
  int timing_reps = 3;     // interleaved timings of the reference and the variant, one batch each (0 = off)
  int timing_samples = 16; // samples in the timed batch (at most `batch`)
  template <class V>
  void fields(V& v) {
    v("samples", samples, "samples generated per run");
    v("batch", batch, "samples per forward pass");
    v("cfg_scale", cfg_scale, "classifier-free guidance scale (1 = off)");
    v("device", device, "cpu | cuda | cuda:N (noise is drawn on the CPU, so it is the same on any device)");
    v("dtype", dtype, "float32 | bfloat16 | float16 (parameters and activations)");
    v("threads", threads, "intra-op threads");
    v("probe_samples", probe_samples, "samples of batch 0 used for site-level drift and error");
    v("save_samples", save_samples, "final samples stored in the run file");
    v("timing_reps", timing_reps,
      "speedup_wall: reference and variant timed in turn on one batch, this many times (0 = one timing each)");
    v("timing_samples", timing_samples, "samples in that timed batch (at most run.batch)");
  }
  template <class C>
  void check(C& c) const {
    c.require(samples >= 1, "samples", "must be >= 1");
    c.require(batch >= 1, "batch", "must be >= 1");
    c.require(cfg_scale >= 0, "cfg_scale", "must be >= 0 (1 = no guidance)");
    c.require(device == "cpu" || device == "cuda" || device.rfind("cuda:", 0) == 0, "device",
              "must be cpu, cuda or cuda:N");
    c.one_of("dtype", dtype, {"float32", "bfloat16", "float16"});
    c.require(threads >= 1, "threads", "must be >= 1");
    c.require(probe_samples >= 1, "probe_samples", "must be >= 1");
    c.require(save_samples >= 0, "save_samples", "must be >= 0");
    c.require(timing_reps >= 0, "timing_reps", "must be >= 0");
    c.require(timing_samples >= 1, "timing_samples", "must be >= 1");
  }
};

}  // namespace cachelab
