// The `video` pipeline: autoregressive video diffusion, chunk by chunk (CausVid / Self
// Forcing style). num_chunks chunks of frames_per_chunk frames are generated in order (outer
// loop, StepIndex::outer = chunk); each chunk starts from Gaussian noise and takes the
// sampler's denoising steps (inner loop, StepIndex::inner = step) while the finished, clean
// chunks before it are passed as context (Cond::context = their frames, at timestep 0).
// Without a K/V cache the model recomputes every past frame at every step; a K/V cache ops
// (rolling_kv) keeps their keys and values instead.
//
// Schedule: the run's sampler when it has one (ddim, ddpm: its timesteps and update rule on
// the chunk [B, frames_per_chunk, C, H, W]), else a deterministic DDIM of `steps` steps on
// the linear schedule of 1000 training steps. Output: all frames [B, F, C, H, W] float,
// F = num_chunks x frames_per_chunk. The sample after each step (/steps, references) is the
// video so far (finished chunks and the chunk being denoised). Needs run.cfg_scale = 1.
//
// Conditioned rollouts (data: moving_mnist): sample i of a run is video i of the data set's
// test split (data_seed + the experiment's seed), its first cond_frames frames given as the
// finished context; num_chunks chunks follow them, so F = cond_frames + num_chunks x
// frames_per_chunk and the output starts with the given frames. Cond::frames carries the
// whole ground-truth video (the metrics' MetricInputs::truth) and Cond::labels its first
// digit's class.
#pragma once
#include <memory>
#include <string>

#include "framework/pipeline.h"
#include "models/moving_mnist.h"

namespace cachelab {

struct VideoPipelineOptions {
  int num_chunks = 3;
  int frames_per_chunk = 2;
  int steps = 4;  // DDIM steps per chunk when the run has no sampler
  std::string data;     // "" (unconditional) | moving_mnist
  int cond_frames = 0;  // leading ground-truth frames given as context (data set only)
  MovingMnistOptions moving_mnist;

  template <class V>
  void fields(V& v) {
    v("num_chunks", num_chunks, "chunks generated one after the other");
    v("frames_per_chunk", frames_per_chunk, "frames denoised together in a chunk");
    v("steps", steps, "DDIM steps per chunk when the run has no sampler (a sampler sets its own)");
    v("data", data, "videos the rollouts continue: empty (unconditional) | moving_mnist (its test split)");
    v("cond_frames", cond_frames, "leading frames of each data video given as finished context (with data)");
    moving_mnist.fields(v);  // canvas, digit_size, num_digits, speed, data_seed
  }
  template <class C>
  void check(C& c) const {
    c.require(num_chunks >= 1, "num_chunks", "must be >= 1");
    c.require(frames_per_chunk >= 1, "frames_per_chunk", "must be >= 1");
    c.require(steps >= 1 && steps <= 1000, "steps", "must be in [1, 1000]");
    c.one_of("data", data, {"", "moving_mnist"});
    c.require(data.empty() ? cond_frames == 0 : cond_frames >= 1, "cond_frames",
              "must be >= 1 with data (the frames the rollout continues) and 0 without");
    moving_mnist.check(c);
  }
};

class VideoPipeline final : public Pipeline {
 public:
  explicit VideoPipeline(const VideoPipelineOptions& o);
  ~VideoPipeline() override;
  int num_steps(const Sampler* sampler) const override;
  int inner_steps(const Sampler* sampler) const override;
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  Cond condition(const Backbone& backbone, int64_t start, int64_t n) const override;
  Cond seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const override;
  int64_t frames_per_sample() const override { return int64_t(o_.num_chunks) * o_.frames_per_chunk; }

 private:
  const Sampler& schedule(const Sampler* given) const { return given ? *given : *own_; }
  VideoPipelineOptions o_;
  std::unique_ptr<Sampler> own_;  // DDIM of o_.steps, used when the run has no sampler
  std::unique_ptr<MovingMnist> data_;  // the test split, with data: moving_mnist
};

}  // namespace cachelab
