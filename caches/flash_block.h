// FlashBlock (2026, "FlashBlock: Attention Caching for Efficient Long-Context Block
// Diffusion", arXiv 2602.05305) on the masked-LM K/V protocol (caches/seq_kv.h), over
// Fast-dLLM's dual cache. Within a block, the attention output that the block's queries draw
// from keys outside the block changes little from step to step, while the block-internal part
// changes a lot. At a block's first step (and every `refresh` steps) the model computes every
// position as the dual cache does, and for each layer this cache also keeps the block queries'
// block-external attention: its output and its log-sum-exp per query and head. At the other
// steps the block's queries are scored against the block's own keys only, and the two parts
// are merged exactly as a split softmax is (weights exp(lse_ext) and exp(lse_int)), the
// external part being the one kept. The attention FLOPs counted at those steps are the block's
// keys only (Ops::attended_keys); the external part computed at a block's first step is
// counted too (RunContext::add_flops).
#pragma once
#include <ATen/core/Tensor.h>

#include <utility>
#include <vector>

#include "caches/seq_kv.h"

namespace cachelab {

// flash_block's `refresh` means what dual_kv's does.
using FlashBlockOptions = PrefixKvOptions;

class FlashBlockCache final : public SeqKvCache {
 public:
  explicit FlashBlockCache(const FlashBlockOptions& o) : SeqKvCache("flash_block"), o_(o) {}
  double attended_keys(int layer, double keys) const override;

  // softmax(q k^T / sqrt(d)) v of one part of the keys, with its log-sum-exp: ([.., Nq, d], [.., Nq]).
  static std::pair<at::Tensor, at::Tensor> partial(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);
  // The attention over the union of two parts' keys, from each part's output and log-sum-exp.
  static at::Tensor merge(const at::Tensor& o_a, const at::Tensor& lse_a, const at::Tensor& o_b, const at::Tensor& lse_b);

 private:
  void check_backbone(const RunContext* ctx) const override;
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  at::Tensor attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) override;

  FlashBlockOptions o_;
  bool full_ = true, reuse_next_ = false;
  int64_t context_ = 0, block_end_ = 0;
  struct External {
    at::Tensor out, lse;  // [B, H, Nb, d], [B, H, Nb]: the block queries' attention over the keys outside the block
  };
  std::vector<External> external_;  // per layer
};

}  // namespace cachelab
