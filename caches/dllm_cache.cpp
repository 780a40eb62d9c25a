#include "caches/dllm_cache.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "framework/error.h"

namespace cachelab {

namespace {
// The positions `sel` [B, L] holds, ascending per sample ([B, R]; every sample holds R).
at::Tensor positions_of(const at::Tensor& sel) {
  const int64_t B = sel.size(0), L = sel.size(1);
  const auto counts = sel.sum(1);
  const int64_t R = counts.max().item<int64_t>();
  CL_CHECK(counts.min().item<int64_t>() == R, "internal: dllm_cache chose different row counts per sample");
  auto pos = at::arange(L, at::kLong).unsqueeze(0).expand({B, L});
  auto score = sel.to(at::kLong) * (2 * L) + pos;
  return std::get<0>(std::get<1>(score.topk(R, 1)).sort(1)).contiguous();
}

at::Tensor rows_index(const at::Tensor& rows, int64_t D, const at::Device& dev) {
  return rows.to(dev).unsqueeze(-1).expand({rows.size(0), rows.size(1), D});
}
}  // namespace

at::Tensor DllmCache::choose(const at::Tensor& gpos, const at::Tensor& v_new, const at::Tensor& v_old, double ratio) {
  const int64_t B = v_new.size(0), H = v_new.size(1), G = v_new.size(2), d = v_new.size(3);
  auto flat = [&](const at::Tensor& v) { return v.transpose(1, 2).reshape({B, G, H * d}).to(at::kFloat); };
  auto cos = at::cosine_similarity(flat(v_new), flat(v_old), -1).cpu();  // [B, G]
  const int64_t k = std::max<int64_t>(1, int64_t(double(G) * ratio));
  return gpos.gather(1, std::get<1>(cos.topk(k, 1, /*largest=*/false)));
}

void DllmCache::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  SeqKvCache::begin_run(linears, ctx);
  delta_.clear();
}

void DllmCache::begin_step(const StepIndex& step) {
  SeqKvCache::begin_step(step);
  if (step.index == 0) delta_.clear();  // a new sequence
}

SeqKvCache::RowPlan DllmCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  CL_CHECK(f.state.defined(), "dllm_cache: the pipeline passes no token states (Cond::token_state); use the mdlm pipeline");
  CL_CHECK(f.values, "dllm_cache: the model offers no value projection (SeqForward::values) for V-verify; llada and "
                     "tiny_mdlm do");
  values_ = f.values;
  prompt_ = f.state.eq(kTokenPrompt);
  length_ = f.length;
  num_layers_ = f.num_layers;
  delta_.resize(size_t(num_layers_));
  refresh_prompt_ = !stored || step.index % o_.prompt_interval == 0;
  refresh_gen_ = !stored || step.index % o_.gen_interval == 0;
  return {all(f), all(f)};  // layer 0 computes every position; every computed row is kept
}

at::Tensor DllmCache::verify(int layer, const at::Tensor& gen) {
  const int64_t B = gen.size(0), L = gen.size(1), D = stream_.size(2);
  const auto dev = stream_.device();
  const at::Tensor gpos = positions_of(gen);  // [B, G]
  const int64_t G = gpos.size(1);
  auto pick = gen.clone().zero_();
  if (G == 0) return pick;
  auto v_new = values_(layer, stream_.gather(1, rows_index(gpos, D, dev)));  // [B, H, G, d]
  const int64_t H = v_new.size(1), d = v_new.size(3);
  RunContext* ctx = run_context();
  if (ctx && ctx->add_flops) ctx->add_flops(2.0 * double(B * G) * double(D) * double(H * d));
  const Stored st = stored(layer);
  CL_CHECK(st.v.defined(), "internal: dllm_cache verifies layer " << layer << " it never stored");
  auto gidx = gpos.to(dev).view({B, 1, G, 1}).expand({B, H, G, d});
  pick.scatter_(1, choose(gpos, v_new, st.v.gather(2, gidx), o_.transfer_ratio), true);
  // Every generated position's values are the new ones from here on.
  auto V = at::zeros({B, H, L, d}, v_new.options()).scatter_(2, gidx, v_new);
  overwrite_values(layer, gen, V);
  return pick;
}

void DllmCache::seq_rows(int layer, at::Tensor& rows, at::Tensor& x) {
  SeqKvCache::seq_rows(layer, rows, x);
  const int64_t B = x.size(0), D = x.size(2);
  const auto dev = x.device();
  if (layer == 0) {  // every position's embedding
    CL_CHECK(rows.size(1) == length_, "internal: dllm_cache's first layer computes every position");
    stream_ = x;
    prev_rows_ = rows;
    return;
  }
  // The previous layer's contributions: fresh for the rows it computed, cached for the rest.
  const auto idx = rows_index(prev_rows_, D, dev);
  at::Tensor& delta = delta_[size_t(layer - 1)];
  if (!delta.defined()) delta = at::zeros_like(stream_);
  delta = delta.scatter(1, idx, x - stream_.gather(1, idx));
  stream_ = (stream_ + delta).scatter_(1, idx, x);  // computed rows exactly as the model has them
  if (layer == num_layers_ || (refresh_prompt_ && refresh_gen_)) {  // the head, or a full layer
    rows = every_row(B, length_);
  } else {
    const auto gen = ~prompt_;
    auto sel = refresh_gen_ ? gen : verify(layer, gen);
    if (refresh_prompt_) sel = sel | prompt_;
    rows = positions_of(sel);
  }
  x = rows.size(1) == length_ ? stream_ : stream_.gather(1, rows_index(rows, D, dev));
  prev_rows_ = rows;
}

}  // namespace cachelab
