#include "caches/seq_kv.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"

namespace cachelab {
namespace {

// [B, L] bool grown to [B, length] with false at the new positions.
at::Tensor grow_mask(const at::Tensor& m, int64_t length) {
  return m.size(1) >= length ? m : at::cat({m, at::zeros({m.size(0), length - m.size(1)}, at::kBool)}, 1);
}

}  // namespace

void SeqKvCache::check_backbone(const RunContext* ctx) const {
  require_sequence(name_, ctx, {SequenceKind::Bidirectional, SequenceKind::BlockCausal, SequenceKind::Topological},
                   "masked-diffusion LMs (tiny_mdlm, llada); for causal video use rolling_kv");
}

void BlockKvCache::check_backbone(const RunContext* ctx) const {
  require_sequence("block_kv", ctx, {SequenceKind::BlockCausal, SequenceKind::Topological, SequenceKind::Tidar},
                   "block-causal, topological and TiDAR models (llada's block_size, topological, tidar), whose settled "
                   "positions' keys and values are final; for a bidirectional model use prefix_kv or dual_kv");
}

void SeqKvCache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  check_backbone(ctx);
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  KvLogging log = bind_kv_logging(name_, ctx);
  attn_site_ = log.attn_site;
  hit_extra_ = log.hit_extra;
  if (ctx && ctx->sites) {
    drift_k_extra_ = ctx->declare_site_extra(
        "kv_drift_k", "1",
        "keys the cache held, against the same positions recomputed this step: ||K_cached - K_new|| / ||K_new|| "
        "over the positions re-stored (refresh steps); NaN where none was");
    drift_v_extra_ = ctx->declare_site_extra("kv_drift_v", "1", "as kv_drift_k, for the values");
    bytes_extra_ = declare_kv_bytes(ctx);
  }
  layers_.clear();
  stored_ = false;
}

void SeqKvCache::begin_step(const StepIndex& step) {
  Ops::begin_step(step);
  step_ = step;
  if (step.index == 0) {  // a new sequence (every batch starts at step 0)
    layers_.clear();
    stored_ = false;
  }
  for (auto& l : layers_) {
    l.served = l.seen = 0;
    l.drift_k = l.drift_v = std::numeric_limits<double>::quiet_NaN();
  }
}

void SeqKvCache::end_step() {
  if (ctx_ && hit_extra_ >= 0)
    for (size_t i = 0; i < layers_.size() && i < attn_site_.size(); ++i) {
      const Layer& l = layers_[i];
      const int site = attn_site_[i];
      if (site < 0) continue;
      if (l.seen > 0) ctx_->set_site_extra(hit_extra_, site, l.served / l.seen);
      ctx_->set_site_extra(drift_k_extra_, site, l.drift_k);
      ctx_->set_site_extra(drift_v_extra_, site, l.drift_v);
      ctx_->set_site_extra(bytes_extra_, site, l.k.defined() ? double(2 * l.k.numel() * l.k.element_size()) : 0.0);
    }
  Ops::end_step();
}

SeqKvCache::Stored SeqKvCache::stored(int layer) const {
  if (layer < 0 || size_t(layer) >= layers_.size()) return {};
  const Layer& l = layers_[size_t(layer)];
  return {l.k, l.v, l.valid};
}

void SeqKvCache::overwrite_values(int layer, const at::Tensor& where, const at::Tensor& V) {
  CL_CHECK(layer >= 0 && size_t(layer) < layers_.size() && layers_[size_t(layer)].v.defined(),
           "internal: " << name_ << " overwrites values of layer " << layer << " it never stored");
  Layer& l = layers_[size_t(layer)];
  auto w = (where & l.valid).to(l.v.device()).view({where.size(0), 1, where.size(1), 1});
  l.v = at::where(w, V.to(l.v.scalar_type()), l.v);
}

at::Tensor SeqKvCache::attend_weighed(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V,
                                      at::Tensor& weights) {
  weights = attention_weights(q, K, attention_mask(call, q));
  return inner_ ? Ops::attention(call, q, K, V) : at::matmul(weights, V);
}

at::Tensor SeqKvCache::all(const SeqForward& f) { return at::ones({f.batch, f.length}, at::kBool); }

at::Tensor SeqKvCache::positions_between(const SeqForward& f, int64_t begin, int64_t end) {
  auto m = at::zeros({f.batch, f.length}, at::kBool);
  m.narrow(1, begin, end - begin).fill_(true);
  return m;
}

SeqPlan SeqKvCache::seq_begin(const SeqForward& f) {
  CL_CHECK(f.kind != SequenceKind::Causal, name_ << ": a masked-LM K/V cache serves bidirectional models, not causal video (use rolling_kv)");
  // A block-causal model computes up to the end of its current block only: when the
  // sequence grew (a new block), the store grows with it and the new positions are computed.
  const int64_t grown = stored_ && f.length != length_ ? length_ : -1;
  if (grown >= 0) {
    CL_CHECK(f.length > length_, "internal: " << name_ << ": the sequence shrank from " << length_ << " to " << f.length
                                              << " positions within a run");
    const int64_t n = f.length - length_;
    for (auto& l : layers_) {
      if (!l.k.defined()) continue;
      l.k = at::constant_pad_nd(l.k, {0, 0, 0, n});
      l.v = at::constant_pad_nd(l.v, {0, 0, 0, n});
      l.valid = grow_mask(l.valid, f.length);
    }
  }
  length_ = f.length;
  RowPlan d = decide(f, step_, stored_);
  if (grown >= 0) {  // a copy: a decision may hand the same tensor as compute and keep
    d.compute = d.compute.clone();
    d.compute.narrow(1, grown, f.length - grown).fill_(true);
  }
  CL_CHECK(d.compute.defined() && d.compute.sizes() == at::IntArrayRef({f.batch, f.length}),
           "internal: " << name_ << " decided rows of the wrong shape");
  CL_CHECK(stored_ || d.compute.all().item<bool>(), "internal: " << name_ << " reuses keys it never stored");
  keep_ = d.keep.defined() ? (d.keep & d.compute) : at::zeros_like(d.compute);
  visible_ = d.visible;
  if (keep_.any().item<bool>()) stored_ = true;
  SeqPlan plan;
  if (d.compute.all().item<bool>()) return plan;
  // The same count R for every sample: a sample with fewer rows also computes its highest
  // positions that it would have taken from the store (fresh keys, not kept).
  const int64_t R = d.compute.sum(1).max().item<int64_t>();
  auto pos = at::arange(f.length, at::kLong).unsqueeze(0).expand({f.batch, f.length});
  auto score = d.compute.to(at::kLong) * (2 * f.length) + pos;
  auto rows = std::get<0>(std::get<1>(score.topk(R, 1)).sort(1));
  plan.rows = rows.contiguous();
  return plan;
}

at::Tensor SeqKvCache::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  CL_CHECK(call.q_positions.defined() && call.kv_positions.defined(),
           name_ << ": the model passes no positions with its attention calls; this K/V cache serves masked-diffusion "
                    "LMs (tiny_mdlm, llada)");
  CL_CHECK(!call.mask.defined(), name_ << ": attention masks are not supported");
  CL_CHECK(keep_.defined(), "internal: " << name_ << " got an attention call before seq_begin");
  if (size_t(call.layer) >= layers_.size()) layers_.resize(size_t(call.layer) + 1);
  Layer& l = layers_[size_t(call.layer)];
  const int64_t B = k.size(0), H = k.size(1), d = k.size(3), L = keep_.size(1), R = k.size(2);
  CL_CHECK(call.kv_positions.size(0) == B && call.kv_positions.size(1) == R,
           name_ << ": positions do not match the keys");
  const auto dev = k.device();
  auto rows = call.kv_positions.to(dev, at::kLong);
  auto idx = rows.view({B, 1, R, 1}).expand({B, H, R, d});
  at::Tensor K = l.k.defined() ? l.k.clone() : at::zeros({B, H, L, d}, k.options());
  at::Tensor V = l.v.defined() ? l.v.clone() : at::zeros({B, H, L, d}, v.options());
  K.scatter_(2, idx, k);
  V.scatter_(2, idx, v);
  auto fresh = at::zeros({B, L}, at::kBool).scatter_(1, call.kv_positions.to(at::kLong), true);
  auto valid = l.valid.defined() ? (l.valid | fresh) : fresh;
  if (visible_.defined()) valid = valid & visible_;
  // Statistics: keys every query attends to, of which the store supplied the non-fresh ones.
  const double n_valid = double(valid.sum().item<int64_t>()), n_fresh = double(B * R);
  l.served += n_valid - n_fresh;
  l.seen += n_valid;
  // Keep the computed positions the decision keeps.
  if (keep_.any().item<bool>()) {
    // Drift of what the store held at positions it keeps again (stale vs recomputed).
    if (l.valid.defined()) {
      auto again = (keep_ & fresh & l.valid).to(dev).view({B, 1, L, 1}).to(K.scalar_type());
      if (again.sum().item<double>() > 0) {
        auto rel = [&](const at::Tensor& old, const at::Tensor& now) {
          return ((old - now) * again).norm().item<double>() / std::max((now * again).norm().item<double>(), 1e-30);
        };
        l.drift_k = rel(l.k, K);
        l.drift_v = rel(l.v, V);
      }
    }
    auto kept = (keep_ & fresh).to(dev).view({B, 1, L, 1});
    l.k = l.k.defined() ? at::where(kept, K, l.k) : at::where(kept, K, at::zeros_like(K));
    l.v = l.v.defined() ? at::where(kept, V, l.v) : at::where(kept, V, at::zeros_like(V));
    l.valid = l.valid.defined() ? (l.valid | (keep_ & fresh)) : (keep_ & fresh);
  }
  AttnCall inner = call;
  inner.kv_positions = at::arange(L, at::kLong).unsqueeze(0).expand({B, L});
  if (!valid.all().item<bool>())  // positions neither stored nor computed are invisible
    inner.mask = at::where(valid, 0.0f, -std::numeric_limits<float>::infinity()).to(dev, q.scalar_type()).view({B, 1, 1, L});
  return attend(inner, q, K, V);
}

namespace {

// The dual cache's refresh rule: a block's first step, every `refresh`-th, or an empty store.
bool dual_refresh(const StepIndex& step, bool stored, int refresh) {
  return !stored || step.inner == 0 || (refresh > 0 && step.inner % refresh == 0);
}

}  // namespace

SeqKvCache::RowPlan DualKvCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  if (dual_refresh(step, stored, o_.refresh)) return {all(f), all(f)};
  auto block = positions_between(f, f.context, f.block_end);
  return {block, block};
}

SeqKvCache::RowPlan BlockKvCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  CL_CHECK(f.kind == SequenceKind::BlockCausal || f.kind == SequenceKind::Topological || f.kind == SequenceKind::Tidar,
           "block_kv: serves block-causal, topological and TiDAR models (llada's block_size, topological, tidar), whose "
           "settled positions' keys and values are final; for a bidirectional model use prefix_kv or dual_kv");
  // exact_: the positions stored once settled (never recomputed again).
  if (!stored || !exact_.defined()) exact_ = at::zeros({f.batch, f.length}, at::kBool);
  exact_ = grow_mask(exact_, f.length);
  const auto final_ = positions_between(f, 0, f.settled);
  const auto missing = ~(exact_ & final_);  // the current block, and finished positions not stored since
  RowPlan plan{missing, missing & final_};
  if (o_.sub_block) {
    if (!stored || step.inner == 0 || (o_.refresh > 0 && step.inner % o_.refresh == 0)) {
      plan.keep = missing;  // the current block too: the sub-block cache
    } else {
      auto block = positions_between(f, f.context, f.block_end);
      plan = {block, at::zeros_like(block)};
    }
  }
  exact_ = exact_ | (plan.keep & final_);
  return plan;
}

SeqKvCache::RowPlan VicinityKvCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  if (dual_refresh(step, stored, o_.refresh)) return {all(f), all(f)};
  auto window = positions_between(f, std::max<int64_t>(0, f.context - o_.before), std::min(f.length, f.block_end + o_.after));
  return {window, window};
}

SeqKvCache::RowPlan DkvCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  CL_CHECK(f.state.defined(), "dkv_cache: the pipeline passes no token states (Cond::token_state); use the mdlm pipeline");
  const auto masked = f.state.eq(kTokenMasked);
  const bool refresh = !stored || step.inner < 2 || (o_.refresh > 0 && step.inner % o_.refresh == 0);
  if (refresh) return {all(f), ~masked};
  // Delayed by one step: tokens decoded at the previous step are computed once more with
  // their token, and kept from now on.
  auto just_decoded = f.state.eq(int32_t(step.index - 1));
  return {masked | just_decoded, just_decoded};
}

SeqKvCache::RowPlan WindowDiffusionCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  CL_CHECK(f.state.defined(), "window_diffusion: the pipeline passes no token states (Cond::token_state); use the mdlm pipeline");
  const auto masked = f.state.eq(kTokenMasked);
  // Rank of each masked position among the masked ones, left to right (0 = nearest).
  const auto rank = at::where(masked, masked.to(at::kLong).cumsum(1) - 1, at::full_like(f.state, 1 << 30, at::kLong));
  if (!stored || step.inner % o_.refresh == 0) {  // a phase starts: everything, kept
    phase_start_ = step.index;
    window_ = at::Tensor();
    return {all(f), all(f), at::Tensor()};
  }
  if (!window_.defined()) window_ = ~masked | rank.lt(o_.window);  // after the phase's first decode
  // Decoded in this phase: by its first step (seen at the second step only), or later.
  const auto in_phase = step.index == phase_start_ + 1 ? f.state.eq(int32_t(phase_start_))
                                                       : f.state.gt(int32_t(phase_start_)) & f.state.lt(int32_t(step.index));
  const auto active = rank.lt(o_.active) | in_phase;
  return {active, active, window_};
}

}  // namespace cachelab
