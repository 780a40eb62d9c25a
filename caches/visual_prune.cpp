#include "caches/visual_prune.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>

#include "framework/error.h"

namespace cachelab {

void VisualPrune::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  kept_extra_ = ctx ? ctx->declare_site_extra("visual_kept", "fraction",
                                              "fraction of the image's tokens the step's last forward kept (visual_prune)")
                    : -1;
  forwards_ = 0;
  kept_ = std::numeric_limits<double>::quiet_NaN();
}

SeqPlan VisualPrune::seq_begin(const SeqForward& f) {
  CL_CHECK(f.visual > 0, "visual_prune: the backbone has no visual tokens (it prunes a vision-language model's image: "
                         "llada with vision_tokens)");
  visual_ = f.visual;
  const int T = ctx_ ? ctx_->steps : 0;
  pruning_ = T > 0 ? f.step >= o_.from * T && f.step < o_.until * T : (o_.from == 0 && o_.until == 1);
  dropped_ = 0;
  scores_ = at::Tensor();
  kept_ = 1.0;
  ++forwards_;
  return Ops::seq_begin(f);
}

at::Tensor VisualPrune::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  auto out = Ops::attention(call, q, k, v);
  if (!pruning_ || o_.score != "attention" || call.layer != o_.layer - 1) return out;
  // FastV's score: the attention probabilities the text's queries pay each visual key,
  // averaged over heads and text queries.
  const int64_t B = q.size(0), H = q.size(1), Nq = q.size(2), Nk = k.size(2), d = q.size(3);
  const auto qpos = call.q_positions.defined() ? call.q_positions : every_row(B, Nq);
  const auto kpos = call.kv_positions.defined() ? call.kv_positions : every_row(B, Nk);
  const auto weights = attention_weights(q, k, attention_mask(call, q)).to(at::kFloat);      // [B, H, Nq, Nk]
  const auto text = qpos.ge(visual_).to(q.device(), at::kFloat);                              // [B, Nq]
  auto per_key = (weights.sum(1) * text.unsqueeze(-1)).sum(1);                                 // [B, Nk]
  per_key = (per_key / (double(H) * text.sum(1, true).clamp_min(1.0))).cpu();
  const auto key_visual = kpos.lt(visual_);
  scores_ = at::full({B, visual_ + 1}, -std::numeric_limits<float>::infinity(), at::kFloat);
  scores_.scatter_(1, at::where(key_visual, kpos, at::full_like(kpos, visual_)), per_key);
  scores_ = scores_.narrow(1, 0, visual_);
  if (ctx_ && ctx_->add_flops) ctx_->add_flops(4.0 * double(B * H * Nq * Nk * d));  // q k^T and the averaging
  return out;
}

void VisualPrune::seq_rows(int layer, at::Tensor& rows, at::Tensor& x) {
  Ops::seq_rows(layer, rows, x);
  if (!pruning_ || layer != o_.layer) return;
  const int64_t B = rows.size(0), R = rows.size(1);
  const auto visual = rows.lt(visual_);                  // [B, R]
  const auto present = visual.sum(1);                    // visual rows per sample
  const int64_t nv = present.max().item<int64_t>();
  CL_CHECK(nv == present.min().item<int64_t>(), "visual_prune: the samples compute different numbers of visual tokens");
  const int64_t keep = std::min<int64_t>(nv, int64_t(std::ceil(o_.keep * double(visual_) - 1e-9)));
  if (nv - keep <= 0) return;
  at::Tensor score;  // [B, R]: visual rows by their score, other rows +inf (always kept)
  if (o_.score == "attention") {
    CL_CHECK(scores_.defined(), "visual_prune: block " << o_.layer - 1 << " computed no attention in this forward");
    score = scores_.gather(1, rows.clamp_max(visual_ - 1));
  } else {
    auto gen = at::detail::createCPUGenerator(uint64_t(o_.seed) * 1000003ull + forwards_);
    score = at::rand({B, R}, gen);
  }
  score = at::where(visual, score, at::full_like(score, std::numeric_limits<float>::infinity()));
  const auto idx = std::get<0>(at::sort(std::get<1>(at::topk(score, R - (nv - keep), 1)), 1));  // kept rows, in order
  rows = rows.gather(1, idx);
  x = x.gather(1, idx.to(x.device()).unsqueeze(-1).expand({B, idx.size(1), x.size(2)}));
  dropped_ = nv - keep;
  kept_ = 1.0 - double(dropped_) / double(visual_);
}

double VisualPrune::attended_keys(int layer, double keys) const {
  const double inner = Ops::attended_keys(layer, keys);
  return pruning_ && layer >= o_.layer ? inner - double(dropped_) : inner;
}

void VisualPrune::end_step() {
  if (ctx_ && kept_extra_ >= 0) ctx_->set_site_extra(kept_extra_, 0, kept_);
  kept_ = std::numeric_limits<double>::quiet_NaN();
  Ops::end_step();
}

}  // namespace cachelab
