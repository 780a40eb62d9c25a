// d2Cache (Kamichanw/d2Cache, "dual adaptive cache" for masked-diffusion LMs) on the sequence
// protocol of framework/ops.h, as a SeqKvCache (caches/seq_kv.h): the first forward of a
// sequence computes and stores every position; after it, each forward computes only the rows
// chosen from the previous forward, per sample:
//   1. up to `current_k` still-masked generated positions with the highest score = last known
//      confidence x certainty density (a Gaussian, `sigma`, over the decoded positions),
//      searched from the block start to the first block boundary that holds `current_k`
//      masked positions; the current block's positions rank first;
//   2. every position decoded since the previous forward (its keys and values become a real
//      token's);
//   3. of the rest, the nucleus (top-p = `rollout_p`, at least one) of the attention-rollout
//      importance of the previous forward (the layer-averaged attention maps with the residual
//      identity, rolled out over the layers, summed over the queries);
//   4. gaps of at most `inflate_w` between chosen positions are filled;
// samples with fewer rows are topped up to the batch's largest count (the masked positions of
// highest score first, then by importance). Every computed row's fresh keys and values replace
// the stored ones; the queries attend to all L positions. Positions not computed get zero
// logits from the model (a uniform prediction).
//
// The pipeline (models/mdlm_pipeline.cpp) reports confidence only for the current block's
// masked positions, so a masked position beyond the block (never predicted yet) is ranked by
// its certainty density alone (its confidence counts as 1). docs/sequences.md lists every
// difference from the reference.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "caches/seq_kv.h"

namespace cachelab {

struct D2CacheOptions {
  double rollout_p = 0.1;
  int current_k = 32;
  double sigma = 10;
  int inflate_w = 4;
  template <class V>
  void fields(V& v) {
    v("rollout_p", rollout_p, "top-p of the attention-rollout importance: the nucleus of the other positions "
                              "recomputed each step (at least one)");
    v("current_k", current_k, "at most this many masked positions recomputed per step, by confidence x certainty "
                              "density");
    v("sigma", sigma, "standard deviation (in positions) of the Gaussian of the certainty density");
    v("inflate_w", inflate_w, "also recompute every position between two chosen ones at most this far apart; 0 = off");
  }
  template <class C>
  void check(C& c) const {
    c.require(rollout_p >= 0 && rollout_p <= 1, "rollout_p", "must be in [0, 1]");
    c.require(current_k >= 1, "current_k", "must be >= 1");
    c.require(sigma > 0, "sigma", "must be > 0");
    c.require(inflate_w >= 0, "inflate_w", "must be >= 0");
  }
};

class D2Cache final : public SeqKvCache {
 public:
  explicit D2Cache(const D2CacheOptions& o);
  void begin_step(const StepIndex& step) override;

  // The parts of a decision, exposed for tests (CPU tensors).
  struct Choice {
    at::Tensor candidates;  // [B, L] bool: part 1 (masked positions by score)
    at::Tensor decoded;     // [B, L] bool: part 2 (decoded since the previous forward)
    at::Tensor nucleus;     // [B, L] bool: part 3 (by rollout importance)
    at::Tensor rows;        // [B, L] bool: what the forward computes (after inflation and top-up)
    at::Tensor importance;  // [B, L] double: the previous forward's rollout importance
    at::Tensor score;       // [B, L] double: confidence x density (+ the block bias); NaN outside the generation
  };
  // The last decision after a sequence's first forward (undefined tensors before one).
  const Choice& last_choice() const { return choice_; }
  // Tests: keep every decision of the run (cleared by begin_run).
  void record_choices(bool on) { record_ = on; }
  const std::vector<Choice>& choices() const { return history_; }
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;

  // Certainty density of decoded [B, G] (bool) with the reference's boundary rule: left of the
  // sequence counts as decoded, right of it as decoded iff its last position is. [B, G] double.
  static at::Tensor certainty_density(const at::Tensor& decoded, double sigma);
  // Column sums of the rollout prod_l (row-normalised A_l + I) of one forward, where A_l is the
  // identity except at the rows it computed: rows[l] [B, R] int64, maps[l] [B, R, L] those rows'
  // head-averaged attention weights. [B, L] double.
  static at::Tensor rollout_importance(const std::vector<at::Tensor>& rows, const std::vector<at::Tensor>& maps,
                                       int64_t length);
  // Nucleus of scores [B, L] among `allowed` (bool): the highest first while the cumulative
  // normalised score is <= p, at least one (the reference's nucleus_select with min_k 1).
  static at::Tensor nucleus(const at::Tensor& scores, double p, const at::Tensor& allowed);
  // Fills the positions strictly between two selected ones at most w apart.
  static at::Tensor inflate(const at::Tensor& selected, int w);

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  at::Tensor attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) override;

  D2CacheOptions o_;
  at::Tensor conf_;        // [B, L] double: last confidence seen at a computed masked position, NaN = none
  at::Tensor prev_state_;  // [B, L] int32: token states at the previous forward
  at::Tensor prev_rows_;   // [B, L] bool: the previous forward's rows
  std::vector<at::Tensor> att_rows_, att_maps_;  // per layer, this forward (attend)
  Choice choice_;
  bool record_ = false;
  std::vector<Choice> history_;
};

}  // namespace cachelab
