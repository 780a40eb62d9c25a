// Elastic-Cache (Nguyen-Tri et al., 2025, "Attention Is All You Need for KV Cache in Diffusion
// LLMs", arXiv 2510.14973), on the masked-LM K/V protocol (caches/seq_kv.h). It decides when
// and where to refresh from three observations of the paper:
//   - distant MASK tokens mostly act as a length bias: outside the active window (the
//     pipeline's current block) they are cached block-wise, computed at the block's first step
//     only, as the prefix is (Fast-dLLM's dual cache);
//   - the most-attended token drifts least, so its drift bounds the others': each step also
//     recomputes, per layer, the token the block's queries attended most at the previous step
//     (outside the block) and compares its fresh keys and values with the cached ones (cosine
//     similarity of the concatenated keys and values over the heads);
//   - drift grows with depth: when that similarity falls below `gamma` at layer l (for any
//     sample of the batch), layers l + 1 .. onward recompute every position this step and keep
//     the result, starting from each position's cached input hidden state of layer l + 1; the
//     shallow layers keep their caches.
// A block's first step computes everything. What is ours: the paper's exact similarity (we
// compare keys and values, the abstract names the K/V drift), the trigger per batch (one
// sample's drift refreshes every sample: equal row counts make it cost the same), and the
// window = the pipeline's block.
// Logged per step on each layer's attention site, besides the K/V store's extras:
// `elastic_probe_cosine` (the minimum over samples of the probe token's K/V cosine) and
// `elastic_refresh` (1 where the layer recomputed every position because of drift).
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "caches/seq_kv.h"

namespace cachelab {

struct ElasticCacheOptions {
  double gamma = 0.9;
  template <class V>
  void fields(V& v) {
    v("gamma", gamma, "refresh from the next layer onward when the most-attended token's cached keys and values have "
                      "a cosine similarity below this with its recomputed ones (0 = never: a dual cache with probes)");
  }
  template <class C>
  void check(C& c) const {
    c.require(gamma >= 0 && gamma <= 1, "gamma", "must be in [0, 1]");
  }
};

class ElasticCache final : public SeqKvCache {
 public:
  explicit ElasticCache(const ElasticCacheOptions& o) : SeqKvCache("elastic_cache"), o_(o) {}
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  void seq_rows(int layer, at::Tensor& rows, at::Tensor& x) override;
  at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  at::Tensor attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) override;

  ElasticCacheOptions o_;
  RunContext* ctx_ = nullptr;
  std::vector<int> attn_site_;
  int cosine_extra_ = -1, refresh_extra_ = -1;
  int64_t context_ = 0, block_end_ = 0, length_ = 0;
  int num_layers_ = 0;
  bool full_ = false;                // this forward computes everything
  int refresh_from_ = -1;            // this forward: the layer from which every position is recomputed
  std::vector<at::Tensor> probe_;    // per layer: [B] int64 the most-attended position outside the block, or undefined
  std::vector<at::Tensor> hidden_;   // per layer: [B, L, D] each position's last kept input hidden state
  std::vector<double> cosine_;       // per layer, this step
  std::vector<double> refreshed_;    // per layer, this step
};

}  // namespace cachelab
