#include "caches/d2cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"

namespace cachelab {

D2Cache::D2Cache(const D2CacheOptions& o) : SeqKvCache("d2cache"), o_(o) {}

void D2Cache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  SeqKvCache::begin_run(linears, ctx);
  conf_ = prev_state_ = prev_rows_ = at::Tensor();
  att_rows_.clear();
  att_maps_.clear();
  choice_ = Choice{};
  history_.clear();
}

void D2Cache::begin_step(const StepIndex& step) {
  SeqKvCache::begin_step(step);
  if (step.index == 0) {  // a new sequence: nothing known yet
    conf_ = prev_state_ = prev_rows_ = at::Tensor();
    att_rows_.clear();
    att_maps_.clear();
    choice_ = Choice{};
  }
}

at::Tensor D2Cache::certainty_density(const at::Tensor& decoded, double sigma) {
  CL_CHECK(decoded.dim() == 2, "d2cache: certainty_density takes a [B, G] mask");
  CL_CHECK(sigma > 0, "d2cache: sigma must be > 0");
  const int64_t G = decoded.size(1);
  const auto dbl = at::TensorOptions().dtype(at::kDouble);
  auto g = [&](const at::Tensor& t) { return at::exp(-(t * t) / (2 * sigma * sigma)); };
  auto i = at::arange(G, dbl).unsqueeze(1);                            // [G, 1]
  auto mid = g(i - at::arange(G, dbl).unsqueeze(0));                   // [G, G]: positions 0 .. G-1
  auto left = g(i - at::arange(-G, 0, dbl).unsqueeze(0)).sum(1);       // [G]: -G .. -1, always decoded
  auto right = g(i - at::arange(G, 2 * G, dbl).unsqueeze(0)).sum(1);   // [G]: G .. 2G-1, as the last position
  // The reference normalises by the whole kernel of its FFT canvas: offsets -3G .. 3G-1.
  const double norm = g(at::arange(-3 * G, 3 * G, dbl)).sum().item<double>();
  auto m = decoded.to(at::kCPU, at::kDouble);
  auto last = m.select(1, G - 1).unsqueeze(1);
  return (at::matmul(m, mid.t()) + left.unsqueeze(0) + last * right.unsqueeze(0)) / std::max(norm, 1e-8);
}

at::Tensor D2Cache::rollout_importance(const std::vector<at::Tensor>& rows, const std::vector<at::Tensor>& maps,
                                       int64_t length) {
  CL_CHECK(rows.size() == maps.size(), "internal: d2cache rollout has " << rows.size() << " row sets and "
                                                                         << maps.size() << " maps");
  CL_CHECK(!rows.empty() && rows[0].defined(), "internal: d2cache saw no attention in the previous forward");
  const auto dev = maps[0].device();
  const int64_t B = rows[0].size(0);
  // 1^T M_{n-1} ... M_0, from the last layer down: M_l is the identity except at its rows r,
  // so v M_l = v off the rows + v_r M_l[r, :].
  auto v = at::ones({B, length}, at::TensorOptions().dtype(at::kDouble).device(dev));
  for (size_t l = rows.size(); l-- > 0;) {
    CL_CHECK(rows[l].defined() && maps[l].defined(), "internal: d2cache saw no attention at layer " << l);
    auto r = rows[l].to(dev, at::kLong);
    auto M = maps[l].to(at::kDouble).clone();  // [B, R, L]
    M.scatter_add_(2, r.unsqueeze(2), at::ones({B, r.size(1), 1}, M.options()));  // + I
    M = M / M.sum(2, true);
    auto vr = v.gather(1, r);
    v = v.scatter(1, r, 0.0) + at::bmm(vr.unsqueeze(1), M).squeeze(1);
  }
  return v.cpu();
}

at::Tensor D2Cache::nucleus(const at::Tensor& scores, double p, const at::Tensor& allowed) {
  auto s = at::where(allowed, scores.to(at::kDouble), at::zeros_like(scores, at::kDouble));
  auto probs = s / (s.sum(1, true) + 1e-9);
  auto sorted = probs.sort(1, true);
  const auto& idx = std::get<1>(sorted);
  auto keep = std::get<0>(sorted).cumsum(1).le(p);
  keep.select(1, 0).fill_(true);  // at least one (min_k 1)
  keep = keep & allowed.gather(1, idx);
  return at::zeros_like(allowed).scatter(1, idx, keep);
}

at::Tensor D2Cache::inflate(const at::Tensor& selected, int w) {
  auto out = selected.to(at::kCPU).clone().contiguous();
  if (w <= 0) return out;
  auto a = out.accessor<bool, 2>();
  for (int64_t b = 0; b < out.size(0); ++b) {
    int64_t prev = -1;
    for (int64_t i = 0; i < out.size(1); ++i) {
      if (!a[b][i]) continue;
      if (prev >= 0 && i - prev <= w)
        for (int64_t j = prev + 1; j < i; ++j) a[b][j] = true;
      prev = i;
    }
  }
  return out;
}

SeqKvCache::RowPlan D2Cache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  (void)step;
  CL_CHECK(f.state.defined(), "d2cache: the pipeline passes no token states (Cond::token_state); use the mdlm pipeline");
  const int64_t B = f.batch, L = f.length;
  const auto state = f.state.to(at::kCPU, at::kInt);
  const auto masked = state.eq(kTokenMasked);
  if (!stored || !prev_state_.defined()) {  // the first forward: compute and keep everything
    conf_ = at::full({B, L}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
    prev_state_ = state.clone();
    prev_rows_ = all(f);
    att_rows_.clear();
    att_maps_.clear();
    return {all(f), all(f)};
  }
  CL_CHECK(prev_state_.size(0) == B && prev_state_.size(1) == L,
           "d2cache: the sequence changed shape within a run (" << prev_state_.sizes() << " -> [" << B << ", " << L << "])");
  // The prompt is a prefix of P positions, the same for every sample.
  const auto prompt = state.eq(kTokenPrompt);
  const int64_t P = prompt[0].sum().item<int64_t>(), G = L - P;
  CL_CHECK(G > 0 && at::equal(prompt, at::arange(L).lt(P).unsqueeze(0).expand({B, L})),
           "d2cache: the prompt must be the same-length prefix of every sample");
  const int64_t bs = f.block_end - f.context, bstart = f.context - P;
  CL_CHECK(bs > 0 && bstart >= 0 && f.block_end <= L, "d2cache: the block [" << f.context << ", " << f.block_end
                                                                             << ") is not inside the generation");
  Choice c;
  // Rollout importance of the previous forward.
  c.importance = rollout_importance(att_rows_, att_maps_, L);
  att_rows_.clear();
  att_maps_.clear();
  // Confidence: kept where the previous forward computed a still-masked position.
  if (f.confidence.defined()) {
    CL_CHECK(f.confidence.dim() == 2 && f.confidence.size(0) == B && f.confidence.size(1) == L,
             "d2cache: the confidence (SeqForward::confidence) must be [" << B << ", " << L << "], got "
                                                                          << f.confidence.sizes());
    auto conf = f.confidence.to(at::kCPU, at::kDouble);
    conf_ = at::where(at::isfinite(conf) & prev_rows_, conf, conf_);
  }
  c.decoded = prev_state_.eq(kTokenMasked) & ~masked;
  // 1. Masked candidates by confidence x certainty density.
  auto rem = masked.narrow(1, P, G);
  auto cg = conf_.narrow(1, P, G);
  auto score = at::where(at::isnan(cg), at::ones_like(cg), cg) * certainty_density(~rem, o_.sigma);
  auto col = at::arange(G, at::kLong).unsqueeze(0);
  auto in_block = col.ge(bstart) & col.lt(bstart + bs);
  score = score + in_block.to(at::kDouble) * score.max().item<double>();  // the block first
  // Search from the block start to the first block boundary that holds current_k masked positions.
  auto reach = rem.to(at::kLong).cumsum(1).ge(o_.current_k);
  auto min_end = at::where(reach.any(1), reach.to(at::kLong).argmax(1), at::full({B}, G - 1, at::kLong));
  auto search_end = (at::div(min_end, bs, "floor") + 1) * bs - 1;
  auto cand = rem & col.ge(bstart) & col.le(search_end.unsqueeze(1));
  const int64_t k = std::min<int64_t>(o_.current_k, G);
  auto top = std::get<1>(at::where(cand, score, at::full_like(score, -INFINITY)).topk(k, 1));
  auto pick = at::zeros_like(rem).scatter(1, top, true) & cand;
  c.candidates = at::zeros({B, L}, at::kBool);
  c.candidates.narrow(1, P, G).copy_(pick);
  // 2. Tokens decoded since the previous forward.
  auto q = c.candidates | c.decoded;
  // 3. The rollout nucleus of the rest.
  c.nucleus = nucleus(c.importance, o_.rollout_p, ~q) & ~q;
  q = q | c.nucleus;
  // 4. Inflation.
  q = inflate(q, o_.inflate_w);
  // Top-up to the batch's largest count: masked positions of high score first, then importance.
  auto count = q.sum(1);
  const int64_t R = count.max().item<int64_t>();
  if (count.ne(R).any().item<bool>()) {
    auto comb = at::where(q, at::full_like(c.importance, -INFINITY), c.importance);
    double top_imp = comb.max().item<double>();
    if (!std::isfinite(top_imp)) top_imp = 0;
    comb.narrow(1, P, G).add_(score + top_imp);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t need = R - count[b].item<int64_t>();
      if (need > 0) q[b].index_fill_(0, std::get<1>(comb[b].topk(need)), true);
    }
  }
  c.rows = q;
  c.score = at::full({B, L}, std::numeric_limits<double>::quiet_NaN(), at::kDouble);
  c.score.narrow(1, P, G).copy_(score);
  choice_ = c;
  if (record_) history_.push_back(c);
  prev_state_ = state.clone();
  prev_rows_ = q;
  return {q, q};
}

at::Tensor D2Cache::attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) {
  at::Tensor p;
  auto out = attend_weighed(call, q, K, V, p);
  const size_t layer = size_t(call.layer);
  if (att_rows_.size() <= layer) {
    att_rows_.resize(layer + 1);
    att_maps_.resize(layer + 1);
  }
  att_rows_[layer] = call.q_positions.to(at::kCPU, at::kLong);
  att_maps_[layer] = p.mean(1);  // [B, R, L], averaged over the heads
  return out;
}

}  // namespace cachelab
