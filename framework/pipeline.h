// Pipelines own the sampling loop: `image` (steps), `mdlm` (masked-diffusion LM: blocks
// of tokens x denoising steps), `video` (AR chunks of frames x denoising steps). The
// runner hands a pipeline a StepDriver that stacks the site layers, records every step
// and counts FLOPs; the pipeline decides what a step is.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <string>
#include <vector>

#include "framework/backbone.h"
#include "framework/run_options.h"
#include "framework/sampler.h"

namespace cachelab {

class Guidance;

// The runner's side of one trajectory (one batch).
class StepDriver {
 public:
  virtual ~StepDriver() = default;
  virtual Hooks& hooks() = 0;
  // Starts step `s` (layers, ops and timer); ends it with the sample after the step.
  // end_step returns false when the sample went non-finite (the pipeline stops).
  virtual void begin_step(const StepIndex& s) = 0;
  virtual bool end_step(const at::Tensor& x_after) = 0;
  // Noise for this batch, reproducible on any device: drawn from a CPU generator seeded
  // by (run seed, batch), then moved to the run's device and dtype.
  virtual at::Tensor randn(at::IntArrayRef shape) = 0;
  virtual at::TensorOptions options() const = 0;  // the run's device and dtype
};

struct PipelineInputs {
  Backbone* backbone = nullptr;
  const Sampler* sampler = nullptr;     // null for pipelines that bring their own schedule
  const Guidance* guidance = nullptr;
  const RunOptions* run = nullptr;
  Cond cond;                            // this batch's condition
  int64_t batch = 0;                    // samples in this batch
};

class Pipeline {
 public:
  virtual ~Pipeline() = default;
  // Flat number of steps (the rows of /steps) and denoising steps per outer iteration.
  virtual int num_steps(const Sampler* sampler) const = 0;
  virtual int inner_steps(const Sampler* sampler) const { return num_steps(sampler); }
  // Model timestep of flat step i (for /steps/t).
  virtual int64_t timestep(const Sampler* sampler, int i) const = 0;
  // Runs one batch; returns the final samples of the batch (undefined if a step failed).
  virtual at::Tensor run(const PipelineInputs& in, StepDriver& driver) const = 0;
  // The condition of samples [start, start + n) of a run (class i % classes for images).
  virtual Cond condition(const Backbone& backbone, int64_t start, int64_t n) const;
  // The same for a run of seed `seed` (the experiment's `seed:`): what the runner asks. By
  // default the condition does not depend on the seed; a pipeline drawing its prompts from a
  // generator (mdlm tasks) draws another set per seed, so a sweep over seeds samples problems.
  virtual Cond seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const {
    (void)seed;
    return condition(backbone, start, n);
  }
  // Tokens one sample generates (a masked LM's gen_length), for tokens/s; 0 = not a token model.
  virtual int64_t tokens_per_sample() const { return 0; }
  // Frames one sample generates (AR video, the conditioning frames excluded), for frames/s; 0 = not video.
  virtual int64_t frames_per_sample() const { return 0; }
};

// Classifier-free guidance and its conventions (a registered component).
class Guidance {
 public:
  virtual ~Guidance() = default;
  // One guided denoiser evaluation.
  virtual at::Tensor eval(Backbone& bb, const at::Tensor& x, const at::Tensor& t, const Cond& cond, double scale,
                          Hooks& hooks) const = 0;
};

}  // namespace cachelab
