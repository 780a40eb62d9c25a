#include "caches/kv_cache.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>

#include "framework/error.h"

namespace cachelab {
namespace {

int64_t lower_index(const int64_t* p, int64_t n, int64_t value) { return std::lower_bound(p, p + n, value) - p; }

}  // namespace

KvLogging bind_kv_logging(const char* who, RunContext* ctx) {
  KvLogging out;
  if (!ctx || !ctx->sites) return out;
  const auto& sites = *ctx->sites;
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].kind == SiteKind::Attn && sites[i].block >= 0) {
      if (size_t(sites[i].block) >= out.attn_site.size()) out.attn_site.resize(size_t(sites[i].block) + 1, -1);
      out.attn_site[size_t(sites[i].block)] = int(i);
    }
  CL_CHECK(!out.attn_site.empty(), who << ": the backbone has no attention site (kind attn); K/V caches serve "
                                          "sequence models (tiny_mdlm, llada, tiny_video)");
  out.hit_extra = ctx->declare_site_extra(
      "kv_hit_rate", "1",
      "fraction of the keys and values this layer's queries attended to that the K/V cache supplied (the rest "
      "were computed this step); NaN where the layer did not attend");
  return out;
}

int declare_kv_bytes(RunContext* ctx) {
  if (!ctx || !ctx->sites) return -1;
  return ctx->declare_site_extra("kv_bytes", "B", "bytes of keys and values this layer's store holds after the step");
}

void KvCacheOps::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  check_backbone(ctx);
  Ops::begin_run(linears, ctx);
  ctx_ = ctx;
  KvLogging log = bind_kv_logging(name_, ctx);
  attn_site_ = log.attn_site;
  hit_extra_ = log.hit_extra;
  // One entry per attention layer, so that a layer that has not stored yet holds the plan back.
  layers_.assign(attn_site_.size(), Layer());
  bytes_extra_ = declare_kv_bytes(ctx);
}

void KvCacheOps::begin_step(const StepIndex& step) {
  Ops::begin_step(step);
  refresh_ = refresh(step);
  for (auto& l : layers_) l.served = l.seen = 0;
}

void KvCacheOps::end_step() {
  if (ctx_ && hit_extra_ >= 0)
    for (size_t i = 0; i < layers_.size() && i < attn_site_.size(); ++i)
      if (layers_[i].seen > 0 && attn_site_[i] >= 0)
        ctx_->set_site_extra(hit_extra_, attn_site_[i], layers_[i].served / layers_[i].seen);
  if (ctx_ && bytes_extra_ >= 0)
    for (size_t i = 0; i < layers_.size() && i < attn_site_.size(); ++i) {
      const Layer& l = layers_[i];
      if (attn_site_[i] >= 0)
        ctx_->set_site_extra(bytes_extra_, attn_site_[i],
                             l.k.defined() ? double((l.k.numel() + l.v.numel()) * l.k.element_size()) : 0.0);
    }
  Ops::end_step();
}

void KvCacheOps::drop_before(Layer& l, int64_t position) {
  // Positions in [sink, position) go; the sink [0, sink) stays.
  const int64_t n = int64_t(l.pos.size()), keep = lower_index(l.pos.data(), n, std::min(sink_, position));
  const int64_t idx = lower_index(l.pos.data(), n, position);
  if (idx <= keep) return;
  if (idx == n && keep == 0) {
    l.k = l.v = at::Tensor();
  } else {  // copies, so the dropped part is freed
    auto kept = [&](const at::Tensor& t) {
      if (keep == 0) return t.narrow(2, idx, n - idx).clone();
      if (idx == n) return t.narrow(2, 0, keep).clone();
      return at::cat({t.narrow(2, 0, keep), t.narrow(2, idx, n - idx)}, 2);
    };
    l.k = kept(l.k);
    l.v = kept(l.v);
  }
  l.pos.erase(l.pos.begin() + keep, l.pos.begin() + idx);
}

SeqPlan KvCacheOps::seq_begin(const SeqForward& f) {
  const int64_t context = f.context;
  context_ = context;
  int64_t start = layers_.empty() ? 0 : std::numeric_limits<int64_t>::max();
  for (auto& l : layers_) start = std::min(start, l.end);
  if (refresh_ || start > context) {  // a refresh step, or a new sequence: recompute everything
    for (auto& l : layers_) {
      l.k = l.v = at::Tensor();
      l.pos.clear();
      l.end = 0;
    }
    start = 0;
  }
  // Every later query is at a position >= start: older keys are out of every window.
  if (window_ >= 0)
    for (auto& l : layers_) drop_before(l, start - window_);
  SeqPlan plan;
  plan.window = window_;
  plan.sink = window_ >= 0 ? sink_ : 0;
  if (start > 0) plan.rows = every_row(f.batch, f.length).narrow(1, start, f.length - start).contiguous();
  return plan;
}

CallPositions shared_positions(const char* who, const AttnCall& call, const at::Tensor& q, const at::Tensor& k) {
  CL_CHECK(call.q_positions.defined() && call.kv_positions.defined(),
           who << ": the model passes no positions with its attention calls; K/V caches serve sequence models "
                  "(tiny_mdlm, llada, tiny_video)");
  CL_CHECK(!call.mask.defined(), who << ": attention masks are not supported (a cached key is seen by every query)");
  CL_CHECK(call.q_positions.device().is_cpu() && call.kv_positions.device().is_cpu(),
           who << ": attention positions must be CPU tensors");
  auto first_row = [&](const at::Tensor& t) {
    CL_CHECK(t.dim() == 2 && t.equal(t.narrow(0, 0, 1).expand_as(t)),
             who << ": the rows computed differ between samples (another K/V cache in the ops chain?)");
    return t.select(0, 0).to(at::kLong).contiguous();
  };
  CallPositions out{first_row(call.q_positions), first_row(call.kv_positions)};
  CL_CHECK(out.kv.numel() == k.size(2) && out.q.numel() == q.size(2),
           who << ": positions do not match the queries or keys");
  return out;
}

at::Tensor KvCacheOps::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  // Every sample computes the same positions (seq_begin asks for one range): sample 0's speak for all.
  const auto [qp, kp] = shared_positions(name_, call, q, k);
  if (size_t(call.layer) >= layers_.size()) layers_.resize(size_t(call.layer) + 1);
  Layer& l = layers_[size_t(call.layer)];
  const int64_t* p = kp.data_ptr<int64_t>();
  const int64_t n = kp.numel();
  // Keys a call's queries may see: with a window, positions >= (its first query's - window);
  // the queries of one call are one frame or one chunk of frames.
  int64_t lo = std::numeric_limits<int64_t>::min();
  if (window_ >= 0 && qp.numel() > 0) lo = qp.min().item<int64_t>() - window_;
  const int64_t first = n > 0 ? p[0] : std::numeric_limits<int64_t>::max();
  // Positions < sink_lo are sink positions outside the window (visible all the same).
  const int64_t sink_lo = std::min(sink_, lo);
  // Supplied by the cache: stored positions in [0, min(sink_lo, first)) and [lo, first).
  const int64_t stored = int64_t(l.pos.size());
  const int64_t s_end = lower_index(l.pos.data(), stored, std::min(sink_lo, first));
  const int64_t b = lower_index(l.pos.data(), stored, first);
  const int64_t a = std::max(s_end, lower_index(l.pos.data(), stored, lo));
  at::Tensor ck, cv, cpos;
  auto from_store = [&](const at::Tensor& t) {
    if (s_end == 0) return t.narrow(2, a, b - a);
    return b > a ? at::cat({t.narrow(2, 0, s_end), t.narrow(2, a, b - a)}, 2) : t.narrow(2, 0, s_end);
  };
  const int64_t supplied = s_end + std::max<int64_t>(b - a, 0);
  if (supplied > 0) {
    ck = from_store(l.k);
    cv = from_store(l.v);
    std::vector<int64_t> pos(l.pos.begin(), l.pos.begin() + s_end);
    if (b > a) pos.insert(pos.end(), l.pos.begin() + a, l.pos.begin() + b);
    cpos = at::tensor(pos, at::kLong);
  }
  // Store the finished context this call computed: positions in [end, context).
  const int64_t s0 = lower_index(p, n, l.end), s1 = lower_index(p, n, context_);
  if (s1 > s0) {
    CL_CHECK(p[s0] == l.end, name_ << ": layer " << call.layer << " computed positions from " << p[s0]
                                   << " but the cache holds them only up to " << l.end);
    auto nk = k.narrow(2, s0, s1 - s0), nv = v.narrow(2, s0, s1 - s0);
    l.k = l.k.defined() ? at::cat({l.k, nk}, 2) : nk.clone();
    l.v = l.v.defined() ? at::cat({l.v, nv}, 2) : nv.clone();
    l.pos.insert(l.pos.end(), p + s0, p + s1);
    l.end = p[s1 - 1] + 1;
  }
  // The computed keys inside the window, and those of the sink before it.
  const int64_t c0 = lower_index(p, n, sink_lo), c = std::max(c0, lower_index(p, n, lo));
  l.served += double(supplied);
  l.seen += double(supplied + c0 + n - c);
  AttnCall inner = call;
  auto keep = [&](const at::Tensor& t, int64_t dim) {
    if (c == c0) return t;  // nothing between the sink and the window
    if (c0 == 0) return t.narrow(dim, c, n - c);
    return at::cat({t.narrow(dim, 0, c0), t.narrow(dim, c, n - c)}, dim);
  };
  at::Tensor K = keep(k, 2), V = keep(v, 2);
  at::Tensor kpos = keep(kp, 0);
  if (ck.defined()) {
    K = at::cat({ck, K}, 2);
    V = at::cat({cv, V}, 2);
    kpos = at::cat({cpos, kpos});
  }
  inner.kv_positions = kpos.unsqueeze(0).expand({q.size(0), kpos.numel()});
  return Ops::attention(inner, q, K, V);
}

}  // namespace cachelab
