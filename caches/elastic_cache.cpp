#include "caches/elastic_cache.h"

#include <ATen/ATen.h>

#include <limits>

#include "framework/error.h"

namespace cachelab {

namespace {
constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();
}

void ElasticCache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  SeqKvCache::begin_run(linears, ctx);
  ctx_ = ctx;
  attn_site_ = bind_kv_logging("elastic_cache", ctx).attn_site;
  if (ctx && ctx->sites) {
    cosine_extra_ = ctx->declare_site_extra(
        "elastic_probe_cosine", "1",
        "cosine similarity of the most-attended token's cached keys and values with its recomputed ones (minimum over "
        "the batch); NaN at full forwards");
    refresh_extra_ = ctx->declare_site_extra(
        "elastic_refresh", "1", "1 where the layer recomputed every position because a shallower layer's probe drifted");
  }
  probe_.clear();
  hidden_.clear();
}

void ElasticCache::begin_step(const StepIndex& step) {
  SeqKvCache::begin_step(step);
  if (step.index == 0) {  // a new sequence
    probe_.clear();
    hidden_.clear();
  }
  cosine_.assign(cosine_.size(), kNaN);
  refreshed_.assign(refreshed_.size(), 0.0);
}

void ElasticCache::end_step() {
  if (ctx_ && cosine_extra_ >= 0)
    for (size_t i = 0; i < attn_site_.size() && i < cosine_.size(); ++i)
      if (attn_site_[i] >= 0) {
        ctx_->set_site_extra(cosine_extra_, attn_site_[i], cosine_[i]);
        ctx_->set_site_extra(refresh_extra_, attn_site_[i], refreshed_[i]);
      }
  SeqKvCache::end_step();
}

SeqKvCache::RowPlan ElasticCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  context_ = f.context;
  block_end_ = f.block_end;
  length_ = f.length;
  num_layers_ = f.num_layers;
  CL_CHECK(num_layers_ >= 1, "elastic_cache: the model reports no layers (SeqForward::num_layers)");
  probe_.resize(size_t(num_layers_));
  hidden_.resize(size_t(num_layers_));
  cosine_.assign(size_t(num_layers_), kNaN);
  refreshed_.assign(size_t(num_layers_), 0.0);
  refresh_from_ = -1;
  full_ = !stored || step.inner == 0;
  if (full_) return {all(f), all(f)};
  auto block = positions_between(f, f.context, f.block_end);
  auto compute = block.clone();
  for (const auto& p : probe_)
    if (p.defined()) compute.scatter_(1, p.unsqueeze(1), true);
  return {compute, block};
}

void ElasticCache::seq_rows(int layer, at::Tensor& rows, at::Tensor& x) {
  SeqKvCache::seq_rows(layer, rows, x);
  if (layer >= num_layers_) return;
  const int64_t B = rows.size(0), D = x.size(2);
  const auto dev = x.device();
  if (layer == refresh_from_) {
    // Every position from here on, each from its cached input hidden state of this layer.
    keep_mask().fill_(true);
    if (rows.size(1) < length_) {
      CL_CHECK(hidden_[size_t(layer)].defined(), "internal: elastic_cache refreshes layer " << layer << " it never stored");
      auto idx = rows.to(dev).unsqueeze(-1).expand({B, rows.size(1), D});
      x = hidden_[size_t(layer)].to(x.scalar_type()).clone().scatter_(1, idx, x);
      rows = every_row(B, length_);
    }
  }
  if (refresh_from_ >= 0 && layer >= refresh_from_) refreshed_[size_t(layer)] = 1.0;
  // Keep the inputs of the rows whose keys and values are kept.
  auto present = at::zeros({B, length_}, at::kBool).scatter_(1, rows, true);
  auto kept = (present & keep_mask()).to(dev).unsqueeze(-1);
  at::Tensor& h = hidden_[size_t(layer)];
  auto old = h.defined() ? h : at::zeros({B, length_, D}, x.options());
  auto idx = rows.to(dev).unsqueeze(-1).expand({B, rows.size(1), D});
  h = at::where(kept, old.clone().scatter_(1, idx, x.to(old.scalar_type())), old);
}

at::Tensor ElasticCache::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  const size_t layer = size_t(call.layer);
  if (!full_ && refresh_from_ < 0 && layer < probe_.size() && probe_[layer].defined() && call.kv_positions.defined()) {
    const Stored st = stored(call.layer);
    if (st.k.defined()) {
      // The probe's fresh keys and values (it is one of the rows) against the cached ones.
      const int64_t B = k.size(0), H = k.size(1), d = k.size(3);
      const auto& probe = probe_[layer];  // [B]
      auto at_row = call.kv_positions.eq(probe.unsqueeze(1)).to(at::kLong).argmax(1);  // [B] index among the rows
      auto pick = [&](const at::Tensor& t, const at::Tensor& i) {
        return t.gather(2, i.to(t.device()).view({B, 1, 1, 1}).expand({B, H, 1, d})).reshape({B, H * d});
      };
      auto fresh = at::cat({pick(k, at_row), pick(v, at_row)}, 1).to(at::kFloat);
      auto cached = at::cat({pick(st.k, probe), pick(st.v, probe)}, 1).to(at::kFloat);
      const double cos = at::cosine_similarity(fresh, cached, 1).min().item<double>();
      cosine_[layer] = cos;
      if (cos < o_.gamma && call.layer + 1 < num_layers_) refresh_from_ = call.layer + 1;
    }
  }
  return SeqKvCache::attention(call, q, k, v);
}

at::Tensor ElasticCache::attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) {
  at::Tensor p;
  auto out = attend_weighed(call, q, K, V, p);
  // The next step's probe: the position outside the block the block's queries attended most.
  const size_t layer = size_t(call.layer);
  if (layer < probe_.size()) {
    const int64_t L = K.size(2);
    if (block_end_ - context_ >= L) {
      probe_[layer] = at::Tensor();
    } else {
      const auto qpos = call.q_positions.to(at::kCPU, at::kLong);
      const auto in_block = (qpos.ge(context_) & qpos.lt(block_end_)).to(at::kFloat).to(p.device());  // [B, R]
      auto w = (p.to(at::kFloat).sum(1) * in_block.unsqueeze(-1)).sum(1).cpu();  // [B, L]
      w.narrow(1, context_, block_end_ - context_).fill_(-1.0);
      probe_[layer] = w.argmax(1);
    }
  }
  return out;
}

}  // namespace cachelab
