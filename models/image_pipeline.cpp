#include "models/image_pipeline.h"

#include <ATen/ATen.h>

#include <filesystem>

#include "framework/error.h"
#include "framework/layer.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {

Cond Pipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  Cond c;
  if (backbone.num_classes() > 0) c.labels = at::arange(start, start + n, at::kLong).remainder(backbone.num_classes());
  return c;
}

ImagePipeline::ImagePipeline(const ImagePipelineOptions& o) {
  if (o.prompts.empty()) return;
  const std::string path = resolve_path(o.prompts);
  CL_CHECK(std::filesystem::is_regular_file(path),
           "pipeline.prompts: prompt file `" << o.prompts << "` not found (looked at " << path
                                             << "); write it with `cachelab encode-prompts` (SD 1.x, CLIP) or "
                                                "tools/t5_embed.py (PixArt-α, T5), docs/full-size.md");
  auto file = read_safetensors(path);
  for (auto& kv : file.tensors) {
    if (kv.first == "embeddings") embeddings_ = kv.second.to(at::kFloat);
    else if (kv.first == "mask") mask_ = kv.second.ne(0).to(at::kLong);
    else if (kv.first == "negative_embeddings") negative_ = kv.second.to(at::kFloat);
    else if (kv.first == "negative_mask") negative_mask_ = kv.second.ne(0).to(at::kLong);
    else if (kv.first == "ids") continue;  // the token ids, kept for the record (cachelab encode-prompts)
    else CL_FAIL("pipeline.prompts: " << path << " has tensor `" << kv.first << "`; a prompt file holds embeddings, "
                                      << "mask, negative_embeddings, negative_mask and ids (tools/t5_embed.py)");
  }
  auto check = [&](const at::Tensor& e, const at::Tensor& m, const char* name, const char* mname) {
    CL_CHECK(e.dim() == 3 && e.size(0) >= 1 && e.size(1) >= 1,
             "pipeline.prompts: " << path << ": `" << name << "` has shape " << shape_str(e.sizes())
                                  << "; expected [N, L, E]");
    CL_CHECK(!m.defined() || (m.dim() == 2 && m.size(0) == e.size(0) && m.size(1) == e.size(1)),
             "pipeline.prompts: " << path << ": `" << mname << "` has shape " << shape_str(m.sizes()) << "; expected ["
                                  << e.size(0) << ", " << e.size(1) << "]");
    CL_CHECK(!m.defined() || m.any(1).all().item<bool>(),
             "pipeline.prompts: " << path << ": a row of `" << mname << "` has no real token");
  };
  CL_CHECK(embeddings_.defined(), "pipeline.prompts: " << path << " has no `embeddings` tensor [N, L, E]");
  check(embeddings_, mask_, "embeddings", "mask");
  if (negative_.defined()) {
    check(negative_, negative_mask_, "negative_embeddings", "negative_mask");
    // Guidance batches both halves: the same L and E.
    CL_CHECK(negative_.size(1) == embeddings_.size(1) && negative_.size(2) == embeddings_.size(2),
             "pipeline.prompts: " << path << ": negative_embeddings have shape " << shape_str(negative_.sizes())
                                  << ", embeddings " << shape_str(embeddings_.sizes()) << "; expected [M, "
                                  << embeddings_.size(1) << ", " << embeddings_.size(2) << "]");
  }
  CL_CHECK(negative_.defined() || !negative_mask_.defined(),
           "pipeline.prompts: " << path << " has negative_mask without negative_embeddings");
}

Cond ImagePipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  Cond c = Pipeline::condition(backbone, start, n);
  if (!embeddings_.defined()) return c;
  auto rows = [&](const at::Tensor& t) {
    return t.defined() ? t.index_select(0, at::arange(start, start + n, at::kLong).remainder(t.size(0))) : t;
  };
  c.embeddings = rows(embeddings_);
  c.embeddings_mask = rows(mask_);
  c.negative_embeddings = rows(negative_);
  c.negative_mask = rows(negative_mask_);
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
  for (at::Tensor* t : {&cond.embeddings, &cond.embeddings_mask, &cond.negative_embeddings, &cond.negative_mask})
    if (t->defined()) *t = t->to(driver.options().device());
  at::Tensor x = driver.randn(shape);
  std::vector<at::Tensor> state;  // a multi-evaluation sampler's values between evaluations
  for (int i = 0; i < T; ++i) {
    const int64_t ts = sampler.timesteps()[size_t(i)];
    driver.begin_step({i, T, 0, i, T, ts});
    auto t = at::full({in.batch}, sampler.model_time(i), driver.options().dtype(at::kFloat));
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
  at::Tensor c, u;
  GuidanceCache* reuse = hooks.guidance_cache();
  if (reuse && reuse->skip_unconditional()) {  // the conditional half only; the other estimated
    c = bb.forward(x, t, cond, hooks);
    u = reuse->estimate_unconditional(c);
  } else {
    auto out = bb.forward(at::cat({x, x}), at::cat({t, t}), Cond::cat(cond, bb.null_cond(cond)), hooks);
    c = out.narrow(0, 0, B), u = out.narrow(0, B, B);
    if (reuse) reuse->observe(c, u);
  }
  const int64_t C = c.size(1);
  const int64_t k = o_.channels == "all" ? C : o_.channels == "first3" ? std::min<int64_t>(3, C) : x.size(1);
  auto eps = u.narrow(1, 0, k) + scale * (c.narrow(1, 0, k) - u.narrow(1, 0, k));
  return C > k ? at::cat({eps, c.narrow(1, k, C - k)}, 1) : eps;
}

}  // namespace cachelab
