#include "caches/flash_block.h"

#include <ATen/ATen.h>

#include <cmath>

#include "framework/error.h"

namespace cachelab {

SeqKvCache::RowPlan FlashBlockCache::decide(const SeqForward& f, const StepIndex& step, bool stored) {
  context_ = f.context;
  block_end_ = f.block_end;
  full_ = !stored || step.inner == 0 || (o_.refresh > 0 && step.inner % o_.refresh == 0);
  // Whether the next step reuses what this one keeps (else the external part is not computed).
  const int next = step.inner + 1;
  reuse_next_ = next < step.inner_count && !(o_.refresh > 0 && next % o_.refresh == 0);
  if (full_) {
    external_.assign(size_t(f.num_layers), External{});
    return {all(f), all(f)};
  }
  auto block = positions_between(f, f.context, f.block_end);
  return {block, block};
}

double FlashBlockCache::attended_keys(int layer, double keys) const {
  (void)layer;
  return full_ ? keys : double(block_end_ - context_);
}

std::pair<at::Tensor, at::Tensor> FlashBlockCache::partial(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  auto s = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(-1))));
  return {at::matmul(at::softmax(s, -1), v), at::logsumexp(s, -1)};
}

at::Tensor FlashBlockCache::merge(const at::Tensor& o_a, const at::Tensor& lse_a, const at::Tensor& o_b,
                                  const at::Tensor& lse_b) {
  auto m = at::maximum(lse_a, lse_b);
  auto wa = (lse_a - m).exp().unsqueeze(-1), wb = (lse_b - m).exp().unsqueeze(-1);
  return (wa * o_a + wb * o_b) / (wa + wb);
}

void FlashBlockCache::check_backbone(const RunContext* ctx) const {
  require_sequence("flash_block", ctx, {SequenceKind::Bidirectional},
                   "bidirectional masked LMs (a block's keys outside it are the same for each of its queries); "
                   "for a block-causal model use block_kv or dual_kv");
}

at::Tensor FlashBlockCache::attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) {
  const size_t layer = size_t(call.layer);
  const int64_t L = K.size(2), Nb = block_end_ - context_;
  if (layer >= external_.size()) external_.resize(layer + 1);
  External& ext = external_[layer];
  CL_CHECK(!call.order.defined(), "flash_block: a model whose attention is not bidirectional (llada's block_size, "
                                  "topological) is not supported: its block-external attention differs per query; "
                                  "use block_kv / dual_kv");
  if (full_) {
    // The exact attention; besides, the block queries' block-external part, kept for the block.
    auto out = SeqKvCache::attend(call, q, K, V);
    if (reuse_next_ && Nb < L && !call.mask.defined()) {
      CL_CHECK(q.size(2) == L, "internal: flash_block's full forward computes every position");
      auto outside = [&](const at::Tensor& t) {
        return at::cat({t.narrow(2, 0, context_), t.narrow(2, block_end_, L - block_end_)}, 2);
      };
      auto part = partial(q.narrow(2, context_, Nb), outside(K), outside(V));
      ext = {part.first, part.second};
      // Its own work beside the model's attention: the block's rows scored once more.
      RunContext* ctx = run_context();
      if (ctx && ctx->add_flops)
        ctx->add_flops(4.0 * double(q.size(0) * q.size(1) * Nb) * double(L - Nb) * double(q.size(3)));
    } else {
      ext = {};
    }
    return out;
  }
  if (call.mask.defined()) return SeqKvCache::attend(call, q, K, V);  // positions never stored: not the dual cache's case
  CL_CHECK(q.size(2) == Nb, "internal: flash_block computes the block's " << Nb << " rows, got " << q.size(2));
  auto inside = partial(q, K.narrow(2, context_, Nb), V.narrow(2, context_, Nb));
  if (Nb >= L) return inside.first;  // the block is the whole sequence
  CL_CHECK(ext.out.defined(), "internal: flash_block reuses a block-external attention it never kept (layer " << layer << ")");
  return merge(ext.out, ext.lse, inside.first, inside.second).to(q.scalar_type());
}

}  // namespace cachelab
