#include "models/image_pipeline.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

Cond Pipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  Cond c;
  if (backbone.num_classes() > 0) c.labels = at::arange(start, start + n, at::kLong).remainder(backbone.num_classes());
  return c;
}

int ImagePipeline::num_steps(const Sampler* sampler) const {
  CL_CHECK(sampler, "the image pipeline needs a sampler");
  return sampler->num_steps();
}

int64_t ImagePipeline::timestep(const Sampler* sampler, int i) const { return sampler->timesteps()[size_t(i)]; }

at::Tensor ImagePipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  CL_CHECK(in.sampler && in.guidance, "the image pipeline needs a sampler and a guidance component");
  Backbone& bb = *in.backbone;
  const Sampler& sampler = *in.sampler;
  std::vector<int64_t> shape = bb.sample_shape();
  shape.insert(shape.begin(), in.batch);
  const int T = sampler.num_steps();
  Cond cond = in.cond;
  if (cond.labels.defined()) cond.labels = cond.labels.to(driver.options().device());
  at::Tensor x = driver.randn(shape);
  std::vector<at::Tensor> state;  // a multi-evaluation sampler's values between evaluations
  for (int i = 0; i < T; ++i) {
    const int64_t ts = sampler.timesteps()[size_t(i)];
    driver.begin_step({i, T, 0, i, T, ts});
    auto t = at::full({in.batch}, double(ts), driver.options().dtype(at::kFloat));
    auto out = in.guidance->eval(bb, x, t, cond, in.run->cfg_scale, driver.hooks());
    at::Tensor noise;
    if (sampler.needs_noise()) noise = driver.randn(x.sizes());
    x = sampler.advance(i, x, out, noise, state);
    if (!driver.end_step(x)) return at::Tensor();
  }
  return x;
}

at::Tensor CfgGuidance::eval(Backbone& bb, const at::Tensor& x, const at::Tensor& t, const Cond& cond, double scale,
                             Hooks& hooks) const {
  if (scale == 1.0) return bb.forward(x, t, cond, hooks);
  const int64_t B = x.size(0);
  auto out = bb.forward(at::cat({x, x}), at::cat({t, t}), Cond::cat(cond, bb.null_cond(cond)), hooks);
  const int64_t C = out.size(1);
  const int64_t k = o_.channels == "all" ? C : o_.channels == "first3" ? std::min<int64_t>(3, C) : x.size(1);
  auto c = out.narrow(0, 0, B), u = out.narrow(0, B, B);
  auto eps = u.narrow(1, 0, k) + scale * (c.narrow(1, 0, k) - u.narrow(1, 0, k));
  return C > k ? at::cat({eps, c.narrow(1, k, C - k)}, 1) : eps;
}

}  // namespace cachelab
