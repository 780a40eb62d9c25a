#include "models/video_pipeline.h"

#include <ATen/ATen.h>

#include "framework/error.h"
#include "framework/paths.h"
#include "models/samplers.h"

namespace cachelab {

VideoPipeline::VideoPipeline(const VideoPipelineOptions& o) : o_(o) {
  CL_CHECK(o.num_chunks >= 1 && o.frames_per_chunk >= 1, "video: num_chunks and frames_per_chunk must be >= 1");
  DdimOptions d;
  d.steps = o.steps;
  own_ = std::make_unique<DdimSampler>(d);
  CL_CHECK(o.data.empty() || o.data == "moving_mnist", "video: unknown data `" << o.data << "`; known: moving_mnist");
  CL_CHECK(o.data.empty() ? o.cond_frames == 0 : o.cond_frames >= 1,
           "video: cond_frames must be >= 1 with data and 0 without (got " << o.cond_frames << ")");
  if (!o.data.empty()) data_ = std::make_unique<MovingMnist>(o.moving_mnist, default_data_dir(), "test");
}

Cond VideoPipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  return seeded_condition(backbone, start, n, 0);
}

Cond VideoPipeline::seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const {
  if (!data_) return Pipeline::condition(backbone, start, n);
  const MovingMnistOptions& mo = o_.moving_mnist;
  const std::vector<int64_t> frame = backbone.sample_shape();
  CL_CHECK(frame.size() == 4 && frame[1] == 1 && frame[2] == mo.canvas && frame[3] == mo.canvas,
           "video: moving_mnist frames are 1 x " << mo.canvas << " x " << mo.canvas
                                                 << ": the backbone's frames must match (pipeline.canvas)");
  auto v = data_->videos(start, n, o_.cond_frames + int64_t(o_.num_chunks) * o_.frames_per_chunk, seed);
  Cond c;
  c.frames = v.frames;
  c.labels = v.labels.select(1, 0).contiguous();
  return c;
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
  const int64_t given = in.cond.frames.defined() ? o_.cond_frames : 0;
  const int64_t F = given + int64_t(o_.num_chunks) * o_.frames_per_chunk;
  CL_CHECK(F <= frame[0], "video: " << F << " frames (num_chunks x frames_per_chunk) exceed the model's "
                                    << frame[0] << " frames");
  const std::vector<int64_t> chunk_shape = {in.batch, o_.frames_per_chunk, frame[1], frame[2], frame[3]};
  const int S = sampler.num_steps(), T = num_steps(in.sampler);
  Cond cond = in.cond;
  at::Tensor video;  // the given frames and finished chunks [B, given + c * frames_per_chunk, C, H, W]
  if (given > 0) {
    CL_CHECK(in.cond.frames.size(0) == in.batch && in.cond.frames.size(1) >= given,
             "video: the condition holds " << in.cond.frames.sizes() << " frames for a batch of " << in.batch);
    video = in.cond.frames.narrow(1, 0, given).to(driver.options());
  }
  cond.frames = at::Tensor();  // the model sees the given frames through x
  for (int c = 0; c < o_.num_chunks; ++c) {
    cond.chunk = c;
    cond.context = given + int64_t(c) * o_.frames_per_chunk;
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
