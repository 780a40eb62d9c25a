// Visual-token pruning for vision-language masked LMs (the visual-token redundancy study of
// discrete-diffusion MLLMs, which prunes as FastV does), as an ops layer: in the forwards of
// the steps it prunes, the image's tokens (SeqForward::visual) that the text attends to least
// are dropped from the rows the model computes before block `layer`, so the later blocks
// neither compute them nor attend to them.
//
//   visual_prune  score `attention` (FastV): the attention block layer - 1 pays each visual
//                 token, averaged over heads and over the text queries (every non-visual row);
//                 `random`: a seeded random subset of the same size (the control). keep: the
//                 fraction of visual tokens kept (rounded up). from / until: the steps pruned,
//                 as fractions of the run's steps [from T, until T) (0 / 1 = every step; the
//                 study's early-step pruning is until 0.5, late-step pruning from 0.5).
//
// The scores come from a second, dense evaluation of block layer - 1's attention
// probabilities (their FLOPs are counted as the component's own work); a fused kernel would
// return them with the attention. Pruned tokens leave the keys of the later blocks
// (attended_keys counts them out). Logged per step: `visual_kept` (site extra on the model
// site), the fraction of visual tokens the step's last forward kept (1 at steps not pruned).
// With a K/V cache inside, an image held in the cache's store (not computed) is not pruned.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "framework/layer.h"
#include "framework/ops.h"

namespace cachelab {

struct VisualPruneOptions {
  double keep = 0.5;
  int layer = 1;
  double from = 0.0, until = 1.0;
  std::string score = "attention";
  int64_t seed = 0;
  template <class V>
  void fields(V& v) {
    v("keep", keep, "fraction of the image's tokens kept (rounded up)");
    v("layer", layer, "the tokens are dropped before this block (scored by block layer - 1's attention); >= 1");
    v("from", from, "prune at steps >= from x the run's steps");
    v("until", until, "prune at steps < until x the run's steps");
    v("score", score, "attention (FastV: attention the text pays each visual token) | random (the control)");
    v("seed", seed, "score random: seed of the subset drawn per forward");
  }
  template <class C>
  void check(C& c) const {
    c.require(keep > 0 && keep <= 1, "keep", "must be in (0, 1]");
    c.require(layer >= 1, "layer", "must be >= 1 (block 0's attention scores the tokens)");
    c.require(from >= 0 && from < until && until <= 1, "from", "from and until must satisfy 0 <= from < until <= 1");
    c.one_of("score", score, {"attention", "random"});
  }
};

class VisualPrune final : public Ops {
 public:
  explicit VisualPrune(const VisualPruneOptions& o) : o_(o) {}
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  SeqPlan seq_begin(const SeqForward& f) override;
  at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  void seq_rows(int layer, at::Tensor& rows, at::Tensor& x) override;
  double attended_keys(int layer, double keys) const override;
  void end_step() override;

 private:
  VisualPruneOptions o_;
  RunContext* ctx_ = nullptr;
  int kept_extra_ = -1;
  int64_t visual_ = 0;
  bool pruning_ = false;  // this forward prunes
  int64_t dropped_ = 0;   // visual tokens dropped in this forward (the same in every sample)
  double kept_ = 1.0;     // of the step's last forward
  at::Tensor scores_;     // [B, visual] from block layer - 1
  uint64_t forwards_ = 0;
};

}  // namespace cachelab
