#include "models/mdlm_pipeline.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "framework/error.h"
#include "models/masked_lm.h"

namespace cachelab {

MdlmPipeline::MdlmPipeline(const MdlmPipelineOptions& o) : o_(o) {
  CL_CHECK(o.gen_length >= 1 && o.block_length >= 1 && o.gen_length % o.block_length == 0,
           "mdlm: block_length " << o.block_length << " must divide gen_length " << o.gen_length);
  CL_CHECK(o.steps_per_block >= 1 && o.steps_per_block <= o.block_length,
           "mdlm: steps_per_block must be in [1, block_length]");
}

int MdlmPipeline::num_steps(const Sampler*) const { return o_.gen_length / o_.block_length * o_.steps_per_block; }
int MdlmPipeline::inner_steps(const Sampler*) const { return o_.steps_per_block; }

int MdlmPipeline::tokens_at_step(int inner) const {
  const int base = o_.block_length / o_.steps_per_block, extra = o_.block_length % o_.steps_per_block;
  return base + (inner < extra ? 1 : 0);
}

int64_t MdlmPipeline::timestep(const Sampler*, int i) const {
  const int block = i / o_.steps_per_block, inner = i % o_.steps_per_block;
  int done = block * o_.block_length;
  for (int s = 0; s < inner; ++s) done += tokens_at_step(s);
  return int64_t(std::lround(1000.0 * (o_.gen_length - done) / o_.gen_length));
}

at::Tensor MdlmPipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  const auto* lm = dynamic_cast<const MaskedLm*>(in.backbone);
  CL_CHECK(lm, "the mdlm pipeline needs a masked-diffusion LM backbone (tiny_mdlm)");
  CL_CHECK(!in.run || in.run->cfg_scale == 1.0,
           "the mdlm pipeline has no classifier-free guidance: set run.cfg_scale: 1");
  Backbone& bb = *in.backbone;
  const auto dev = driver.options().device();
  const int64_t B = in.batch, V = lm->vocab_size(), mask = lm->mask_id();
  at::Tensor prompt;
  if (in.cond.tokens.defined()) {
    CL_CHECK(in.cond.tokens.dim() == 2 && in.cond.tokens.size(0) == B, "mdlm: Cond::tokens must be [B, P]");
    prompt = in.cond.tokens.to(dev, at::kLong);
  } else {
    prompt = driver.randn({B, int64_t(o_.prompt_length), V}).argmax(-1).to(at::kLong);
  }
  const int64_t P = prompt.size(1), G = o_.gen_length, L = P + G;
  CL_CHECK(L <= lm->max_length(), "mdlm: prompt (" << P << ") + gen_length (" << G << ") exceeds the model's max_length "
                                                  << lm->max_length());
  at::Tensor x = at::cat({prompt, at::full({B, G}, mask, prompt.options())}, 1);
  const int blocks = int(G / o_.block_length), S = o_.steps_per_block, T = num_steps(nullptr);
  Cond cond = in.cond;
  for (int b = 0; b < blocks; ++b) {
    const int64_t start = P + int64_t(b) * o_.block_length;
    cond.context = start;
    for (int s = 0; s < S; ++s) {
      const int i = b * S + s;
      const int64_t ts = timestep(nullptr, i);
      driver.begin_step({i, T, b, s, S, ts});
      auto t = at::full({B}, double(ts), driver.options().dtype(at::kFloat));
      // logits of positions [start, L): the current block comes first.
      auto logits = bb.forward(x, t, cond, driver.hooks()).narrow(1, 0, o_.block_length).to(at::kFloat);
      if (!at::isfinite(logits).all().item<bool>()) {  // token ids cannot go non-finite: the logits tell
        driver.end_step(logits);
        return at::Tensor();
      }
      auto probs = at::softmax(logits, -1);
      auto best = probs.max(-1);
      at::Tensor conf = std::get<0>(best), pred = std::get<1>(best);  // [B, block]
      auto block = x.narrow(1, start, o_.block_length);
      auto masked = block.eq(mask);
      conf = at::where(masked, conf, at::full_like(conf, -std::numeric_limits<float>::infinity()));
      // Low-confidence remasking: keep (unmask) the k most confident, leave the rest masked.
      const int k = tokens_at_step(s);
      auto chosen = std::get<1>(conf.topk(k, -1));  // [B, k] positions within the block
      auto updated = block.scatter(1, chosen, pred.gather(1, chosen));
      x = at::cat({x.narrow(1, 0, start), updated, x.narrow(1, start + o_.block_length, L - start - o_.block_length)}, 1);
      if (!driver.end_step(x)) return at::Tensor();
    }
  }
  return x;
}

}  // namespace cachelab
