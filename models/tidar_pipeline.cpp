#include "models/tidar_pipeline.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"
#include "models/masked_lm.h"
#include "models/mdlm_pipeline.h"

namespace cachelab {

TidarPipeline::TidarPipeline(const TidarPipelineOptions& o) : o_(o) {
  CL_CHECK(o.gen_length >= 1 && o.draft >= 0, "tidar: gen_length must be >= 1 and draft >= 0");
}

int64_t TidarPipeline::timestep(const Sampler*, int i) const {
  return int64_t(std::lround(1000.0 * double(o_.gen_length - std::min(i, o_.gen_length)) / o_.gen_length));
}

Cond TidarPipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  return seeded_condition(backbone, start, n, 0);
}

Cond TidarPipeline::seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const {
  if (o_.task.task.empty()) return Pipeline::condition(backbone, start, n);
  return task_condition(backbone, o_.task, o_.gen_length, "tidar", start, n, seed);
}

at::Tensor TidarPipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  const auto* lm = dynamic_cast<const MaskedLm*>(in.backbone);
  CL_CHECK(lm && lm->tidar_block() > 0, "the tidar pipeline decodes a TiDAR model (llada with tidar > 0)");
  CL_CHECK(!in.run || in.run->cfg_scale == 1.0, "the tidar pipeline has no classifier-free guidance: set run.cfg_scale: 1");
  const int64_t k = o_.draft, mask = lm->mask_id(), B = in.batch, G = o_.gen_length;
  CL_CHECK(k <= lm->tidar_block(), "tidar: draft " << k << " exceeds the model's draft blocks (tidar " << lm->tidar_block()
                                                   << "): set pipeline.draft <= " << lm->tidar_block());
  Backbone& bb = *in.backbone;
  const auto dev = driver.options().device();
  at::Tensor x;  // the committed tokens [B, n]
  if (in.cond.tokens.defined()) {
    CL_CHECK(in.cond.tokens.dim() == 2 && in.cond.tokens.size(0) == B, "tidar: Cond::tokens must be [B, P]");
    x = in.cond.tokens.to(dev, at::kLong);
  } else {
    x = driver.randn({B, int64_t(o_.prompt_length), lm->vocab_size()}).argmax(-1).to(at::kLong);
  }
  const int64_t P = x.size(1), end = P + G;
  const int64_t longest = end - 1 + std::max<int64_t>(k - 1, 0) + k * k;  // the last step's input
  CL_CHECK(longest <= lm->max_length(),
           "tidar: prompt (" << P << ") + gen_length (" << G << ") with draft " << k << " needs inputs of up to " << longest
                             << " tokens (committed + drafts + blocks): more than the model's max_length " << lm->max_length());
  at::Tensor drafts = at::empty({B, 0}, x.options());
  auto sample = [&] {  // prompt + generation, what is not committed yet as MASK
    return at::cat({x, at::full({B, end - x.size(1)}, mask, x.options())}, 1);
  };
  const int T = num_steps(nullptr);
  for (int i = 0; i < T; ++i) {
    const int64_t ts = timestep(nullptr, i);
    driver.begin_step({i, T, 0, i, T, ts});
    const int64_t n = x.size(1);
    if (n >= end) {  // complete: no forward
      if (!driver.end_step(sample())) return at::Tensor();
      continue;
    }
    const int64_t D = drafts.size(1), blocks = k > 0 ? D + 1 : 0;
    std::vector<at::Tensor> pos{at::arange(n + D, at::kLong)};
    for (int64_t a = 0; a < blocks; ++a) pos.push_back(at::arange(n + a, n + a + k, at::kLong));
    const auto positions = at::cat(pos).unsqueeze(0).expand({B, n + D + blocks * k});
    auto ids = at::cat({x, drafts, at::full({B, blocks * k}, mask, x.options())}, 1);
    Cond cond = in.cond;
    cond.positions = positions;
    cond.context = n - 1;
    cond.block_end = ids.size(1);
    cond.step = i;
    auto logits = bb.forward(ids, at::full({B}, double(ts), driver.options().dtype(at::kFloat)), cond, driver.hooks())
                      .to(at::kFloat);
    if (!at::isfinite(logits).all().item<bool>()) {
      driver.end_step(logits);
      return at::Tensor();
    }
    logits.select(-1, mask).fill_(-std::numeric_limits<float>::infinity());  // never predict MASK
    const auto pred = logits.argmax(-1);      // [B, rows from n - 1]
    const auto ar = pred.narrow(1, 0, D + 1);  // next-token predictions for positions n .. n + D
    // Accepted drafts: the batch's shortest run of d_j = ar_{j-1}, and no further than the end.
    int64_t a = 0;
    if (D > 0) {
      auto ok = drafts.eq(ar.narrow(1, 0, D)).to(at::kLong).cumprod(1).sum(1);  // [B]
      a = ok.min().item<int64_t>();
    }
    a = std::min(a, end - n - 1);
    x = at::cat({x, drafts.narrow(1, 0, a), ar.narrow(1, a, 1)}, 1);
    // Block a's predictions after its first position are the next drafts.
    drafts = k > 1 ? pred.narrow(1, D + 1 + a * k + 1, k - 1) : at::empty({B, 0}, x.options());
    if (!driver.end_step(sample())) return at::Tensor();
  }
  CL_CHECK(x.size(1) == end, "internal: tidar committed " << x.size(1) - P << " of " << G << " tokens in " << T << " steps");
  return x;
}

}  // namespace cachelab
