#include "models/video_pipeline.h"

#include <ATen/ATen.h>

#include "framework/error.h"
#include "models/samplers.h"

namespace cachelab {

VideoPipeline::VideoPipeline(const VideoPipelineOptions& o) : o_(o) {
  CL_CHECK(o.num_chunks >= 1 && o.frames_per_chunk >= 1, "video: num_chunks and frames_per_chunk must be >= 1");
  DdimOptions d;
  d.steps = o.steps;
  own_ = std::make_unique<DdimSampler>(d);
}

VideoPipeline::~VideoPipeline() = default;

int VideoPipeline::inner_steps(const Sampler* sampler) const { return schedule(sampler).num_steps(); }
int VideoPipeline::num_steps(const Sampler* sampler) const { return o_.num_chunks * inner_steps(sampler); }
int64_t VideoPipeline::timestep(const Sampler* sampler, int i) const {
  const Sampler& s = schedule(sampler);
  return s.timesteps()[size_t(i % s.num_steps())];
}

at::Tensor VideoPipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  CL_CHECK(!in.run || in.run->cfg_scale == 1.0, "the video pipeline has no classifier-free guidance: set run.cfg_scale: 1");
  Backbone& bb = *in.backbone;
  const Sampler& sampler = schedule(in.sampler);
  std::vector<int64_t> frame = bb.sample_shape();  // {max_frames, C, H, W}
  CL_CHECK(frame.size() == 4, "the video pipeline needs a video backbone (sample shape [F, C, H, W])");
  const int64_t F = int64_t(o_.num_chunks) * o_.frames_per_chunk;
  CL_CHECK(F <= frame[0], "video: " << F << " frames (num_chunks x frames_per_chunk) exceed the model's "
                                    << frame[0] << " frames");
  const std::vector<int64_t> chunk_shape = {in.batch, o_.frames_per_chunk, frame[1], frame[2], frame[3]};
  const int S = sampler.num_steps(), T = num_steps(in.sampler);
  Cond cond = in.cond;
  at::Tensor video;  // finished chunks [B, c * frames_per_chunk, C, H, W]
  for (int c = 0; c < o_.num_chunks; ++c) {
    cond.chunk = c;
    cond.context = int64_t(c) * o_.frames_per_chunk;
    at::Tensor x = driver.randn(chunk_shape);
    std::vector<at::Tensor> state;  // a multi-evaluation sampler's values between evaluations
    for (int s = 0; s < S; ++s) {
      const int64_t ts = sampler.timesteps()[size_t(s)];
      driver.begin_step({c * S + s, T, c, s, S, ts});
      auto t = at::full({in.batch}, double(ts), driver.options().dtype(at::kFloat));
      auto eps = bb.forward(video.defined() ? at::cat({video, x}, 1) : x, t, cond, driver.hooks());
      at::Tensor noise;
      if (sampler.needs_noise()) noise = driver.randn(x.sizes());
      x = sampler.advance(s, x, eps, noise, state);
      if (!driver.end_step(video.defined() ? at::cat({video, x}, 1) : x)) return at::Tensor();
    }
    video = video.defined() ? at::cat({video, x}, 1) : x;
  }
  return video;
}

}  // namespace cachelab
