// dLLM-Cache (Liu et al., 2025; maomaocun/dLLM-cache), on the masked-LM K/V protocol
// (caches/seq_kv.h). Every layer's contribution to each position's residual stream (its
// attention and MLP output) is cached with the position's keys and values. Prompt positions
// are recomputed every `prompt_interval` steps and generated positions every `gen_interval`
// steps (the run's steps, across blocks, as the reference counts them); layer 0 always
// computes every position. At the other steps each layer picks the generated positions to
// recompute by V-verify: the layer's value projection of every generated position's current
// input (SeqForward::values) is compared with the cached values, and the `transfer_ratio`
// share with the lowest cosine similarity is recomputed (at least one); every generated
// position's cached values are replaced by the new ones, as the reference does. A position
// not recomputed at a layer adds its cached contribution to its residual stream, so every
// layer still sees every position. The value projections are counted as FLOPs of the step
// (RunContext::add_flops).
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <vector>

#include "caches/seq_kv.h"

namespace cachelab {

struct DllmCacheOptions {
  int prompt_interval = 100;    // Kp
  int gen_interval = 7;         // Kr
  double transfer_ratio = 0.25;  // rho
  template <class V>
  void fields(V& v) {
    v("prompt_interval", prompt_interval, "recompute the prompt's positions every N steps of the run (Kp)");
    v("gen_interval", gen_interval, "recompute every generated position every N steps of the run (Kr)");
    v("transfer_ratio", transfer_ratio, "at the other steps, the share of generated positions each layer recomputes, "
                                        "those whose values changed most (V-verify, rho)");
  }
  template <class C>
  void check(C& c) const {
    c.require(prompt_interval >= 1, "prompt_interval", "must be >= 1");
    c.require(gen_interval >= 1, "gen_interval", "must be >= 1");
    c.require(transfer_ratio > 0 && transfer_ratio <= 1, "transfer_ratio", "must be in (0, 1]");
  }
};

class DllmCache final : public SeqKvCache {
 public:
  explicit DllmCache(const DllmCacheOptions& o) : SeqKvCache("dllm_cache"), o_(o) {}
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void seq_rows(int layer, at::Tensor& rows, at::Tensor& x) override;
  // V-verify's choice: of the generated positions gpos [B, G], the k whose new values v_new
  // [B, H, G, d] have the lowest cosine similarity with their cached ones v_old (same shape),
  // k = max(1, floor(G x ratio)); [B, k] positions.
  static at::Tensor choose(const at::Tensor& gpos, const at::Tensor& v_new, const at::Tensor& v_old, double ratio);

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  at::Tensor verify(int layer, const at::Tensor& gen);  // [B, L] bool: the generated positions recomputed

  DllmCacheOptions o_;
  std::function<at::Tensor(int, const at::Tensor&)> values_;
  at::Tensor prompt_;  // [B, L] bool
  bool refresh_prompt_ = true, refresh_gen_ = true;
  int64_t length_ = 0;
  int num_layers_ = 0;
  at::Tensor prev_rows_;             // [B, R]: the rows the previous layer computed
  at::Tensor stream_;                // [B, L, D]: every position's input to the current layer
  std::vector<at::Tensor> delta_;    // per layer: [B, L, D] each position's cached contribution
};

}  // namespace cachelab
