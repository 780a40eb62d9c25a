#include "models/lm_decoders.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "framework/error.h"
#include "framework/registries.h"

namespace cachelab {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Predicted {
  at::Tensor tokens;  // [B, N] int64 argmax
  at::Tensor conf;    // [B, N] float64 its probability at masked positions, -inf elsewhere
};

Predicted predict(const UnmaskStep& s) {
  auto [conf, tokens] = greedy_confidence(s.logits);
  Predicted p;
  p.tokens = tokens;
  p.conf = at::where(s.masked, conf, at::full_like(conf, -kInf));
  return p;
}

// The k highest-scoring masked positions per sample (k clipped to the masked count).
at::Tensor top_k(const at::Tensor& score, const at::Tensor& masked, int64_t k) {
  auto pick = at::zeros_like(masked);
  if (k <= 0) return pick;
  auto idx = std::get<1>(score.topk(std::min<int64_t>(k, score.size(1)), 1));
  return pick.scatter(1, idx, true) & masked;
}

// Fast-dLLM's rule: every masked position whose confidence is >= threshold, and always the
// most confident one.
UnmaskChoice threshold_choice(const UnmaskStep& s, double threshold) {
  threshold = std::max(threshold, s.min_threshold);
  auto p = predict(s);
  auto pick = (p.conf >= threshold) | top_k(p.conf, s.masked, 1);
  return {pick & s.masked, p.tokens};
}

}  // namespace

std::pair<at::Tensor, at::Tensor> greedy_confidence(const at::Tensor& logits) {
  auto best = at::softmax(logits.to(at::kDouble), -1).max(-1);
  return {std::get<0>(best), std::get<1>(best)};
}

UnmaskChoice LowConfidenceDecoder::choose(const UnmaskStep& s) const {
  auto p = predict(s);
  return {top_k(p.conf, s.masked, s.quota), p.tokens};
}

UnmaskChoice RandomDecoder::choose(const UnmaskStep& s) const {
  auto p = predict(s);
  auto order = at::where(s.masked, s.noise.to(at::kDouble), at::full_like(s.noise, -kInf, at::kDouble));
  return {top_k(order, s.masked, s.quota), p.tokens};
}

UnmaskChoice ThresholdDecoder::choose(const UnmaskStep& s) const { return threshold_choice(s, o_.threshold); }

at::Tensor CreditDecoder::fuse(const UnmaskStep& s) const {
  auto logits = s.logits.to(at::kFloat);
  if (s.inner == 0 || !credit_.defined() || credit_.sizes() != logits.sizes())
    credit_ = at::zeros_like(logits);
  else
    credit_.mul_(o_.decay);
  auto best = at::softmax(logits, -1).max(-1);
  auto gain = std::get<0>(best).pow(o_.gamma) * s.masked.to(at::kFloat);  // masked positions only
  credit_.scatter_add_(2, std::get<1>(best).unsqueeze(-1), gain.unsqueeze(-1));
  return logits + o_.alpha * at::log1p(credit_);
}

UnmaskChoice CreditDecoder::choose(const UnmaskStep& s) const {
  UnmaskStep fused = s;
  fused.logits = fuse(s);
  return threshold_choice(fused, o_.threshold);
}

UnmaskChoice FactorDecoder::choose(const UnmaskStep& s) const {
  auto p = predict(s);
  auto sorted = std::get<0>(p.conf.sort(1, /*descending=*/true));  // masked first
  const int64_t B = sorted.size(0), N = sorted.size(1);
  auto n = at::arange(1, N + 1, sorted.options());                         // 1 .. N
  auto ok = ((n + 1) * (1 - sorted) < o_.factor) & at::isfinite(sorted);   // per rank
  // The largest qualifying n per sample, at least 1.
  auto ranks = at::where(ok, n.unsqueeze(0).expand({B, N}), at::zeros_like(sorted));
  auto count = std::get<0>(ranks.max(1)).clamp_min(1).to(at::kLong);  // [B]
  auto pick = at::zeros_like(s.masked);
  auto order = std::get<1>(p.conf.sort(1, true));
  auto within = at::arange(N, at::kLong).unsqueeze(0).expand({B, N}).lt(count.unsqueeze(1));
  pick.scatter_(1, order, within);
  return {pick & s.masked, p.tokens};
}

SlidingWindowDecoder::SlidingWindowDecoder(const SlidingWindowOptions& o) : o_(o) {
  CL_CHECK(o.window >= 1, "sliding_window: window must be >= 1 (got " << o.window << ")");
  CL_CHECK(o.max_span == 0 || o.max_span >= o.window,
           "sliding_window: max_span (" << o.max_span << ") must be 0 (no cap) or >= window (" << o.window << ")");
  ConfigNode node = o.commit.node;
  if (o.commit.empty()) {
    node = ConfigNode::make_map();
    node.map.emplace_back("type", ConfigNode::make_scalar("threshold"));
    node.map.emplace_back("threshold", ConfigNode::make_scalar("0.9"));
  }
  commit_ = lm_decoders().build(node);
  CL_CHECK(commit_->window().masked == 0,
           "sliding_window: `commit` picks the positions of one step (threshold, low_confidence, random, factor), "
           "not another sliding_window");
}

UnmaskChoice SlidingWindowDecoder::choose(const UnmaskStep& s) const { return commit_->choose(s); }

UnmaskChoice WedlmDecoder::choose(const UnmaskStep& s) const {
  auto logp = at::log_softmax(s.logits.to(at::kDouble), -1);
  auto entropy = -(logp.exp() * logp).sum(-1);  // [B, N] nats
  const int64_t N = s.masked.size(1);
  auto pos = at::arange(N, at::kLong).unsqueeze(0).to(s.masked.device());
  auto first = s.masked.to(at::kLong).argmax(1, true);  // the first masked position per sample
  auto score = entropy + o_.penalty * (pos - first).to(at::kDouble);
  score = at::where(s.masked, score, at::full_like(score, kInf));
  auto pick = score.lt(o_.threshold) | top_k(-score, s.masked, 1);
  return {pick & s.masked, std::get<1>(logp.max(-1))};
}

}  // namespace cachelab
