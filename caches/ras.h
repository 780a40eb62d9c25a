// RAS, region-adaptive sampling (Liu et al., 2025): in the middle of sampling only the
// tokens the model currently focuses on are updated; the other regions keep the noise
// estimate of the previous step. The focus is read from the previous model output.
//
// After every model call that precedes a RAS step, a score per token (patch) is taken
// from the model output o [B, C, H, W]: `l2norm` = |o| over the channels, or `std` = the
// standard deviation over the channels (the reference's default; needs C >= 2), averaged
// over the patch's pixels and the batch, times exp(starvation_scale x times the token was
// left out), so that no region starves. Of the tokens sorted by score, the
// skip = floor((1 - sample_ratio) N) left out are the `high_ratio` share with the highest
// scores and the rest with the lowest (the reference's rule; its default high_ratio 1
// leaves out the highest). At the RAS step:
//   - every attention / MLP site (kinds in `layers`, which must accept rows) computes only
//     the active tokens' rows; the other rows keep that site's last output (attention still
//     projects keys and values of every token, from that mixed residual stream);
//   - the model output of the left-out tokens' pixels is replaced by the previous output.
// RAS steps: start_step <= step <= end_step (-1 = last), except `reset_steps` (full steps
// that stop errors piling up). The reference's defaults are for 28-30 steps.
// Tokens are the image's p x p patches in row-major order, p = H / sqrt(N), as in DiT;
// backbones whose output is not an image of such patches are refused.
#pragma once
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct RasOptions {
  double sample_ratio = 0.5;                          // tokens updated at a RAS step
  int start_step = 4;                                 // first RAS step (steps before are full)
  int end_step = -1;                                  // last RAS step (-1 = the last step)
  std::vector<int> reset_steps = {12, 22};            // full steps in between (error reset)
  std::string metric = "l2norm";                      // l2norm | std
  double starvation_scale = 0.1;                      // score x exp(scale x times left out)
  double high_ratio = 1.0;                            // share of the left-out tokens taken from the top scores
  std::vector<std::string> layers = {"attn", "mlp"};  // site kinds computed on the active rows
  template <class V>
  void fields(V& v) {
    v("sample_ratio", sample_ratio, "fraction of tokens updated at a RAS step");
    v("start_step", start_step, "first RAS step; earlier steps compute every token");
    v("end_step", end_step, "last RAS step (-1 = the last step)");
    v("reset_steps", reset_steps, "steps computed in full in between (error reset)");
    v("metric", metric, "per-token score of the previous output: l2norm (over channels) | std (needs >= 2 channels)");
    v("starvation_scale", starvation_scale, "score multiplied by exp(scale x times the token was left out)");
    v("high_ratio", high_ratio, "share of the left-out tokens taken from the highest scores (rest: lowest)");
    v("layers", layers, "site kinds computed on the active tokens only (attn, mlp)");
  }
  template <class C>
  void check(C& c) const {
    c.require(sample_ratio > 0 && sample_ratio <= 1, "sample_ratio", "must be in (0, 1]");
    c.require(start_step >= 1, "start_step", "must be >= 1 (the first step has no previous output)");
    c.require(end_step >= -1, "end_step", "must be >= 0, or -1 for the last step");
    c.one_of("metric", metric, {"l2norm", "std"});
    c.require(starvation_scale >= 0, "starvation_scale", "must be >= 0");
    c.require(high_ratio >= 0 && high_ratio <= 1, "high_ratio", "must be in [0, 1]");
    c.require(!layers.empty(), "layers", "must name at least one site kind");
    c.each_one_of("layers", layers, {"attn", "mlp"});
  }
};

class RasPolicy final : public CachePolicy {
 public:
  explicit RasPolicy(const RasOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;

  // Per-token score [N] of a model output [B, C, H, W] cut into N row-major square patches.
  static at::Tensor token_scores(const at::Tensor& out, int64_t tokens, const std::string& metric);
  // Splits tokens by score: the `skip` left out (high_ratio share from the top, the rest
  // from the bottom) and the active rest, both sorted ascending. Returns {active, left_out}.
  static std::pair<at::Tensor, at::Tensor> select(const at::Tensor& scores, int64_t skip, double high_ratio);

 private:
  bool ras_step(int step) const;
  Tensors at_model(SiteCall& call, const Next& next);
  RasOptions o_;
  std::vector<bool> selected_;
  std::vector<at::Tensor> cache_;  // per site: [B, N, D] last output of every row
  at::Tensor noise_;               // previous model output [B, C, H, W]
  at::Tensor active_;              // int64 [R] tokens updated at this step; undefined = all
  at::Tensor dropped_;             // float [N] times each token was left out
  int64_t tokens_ = 0;
  int step_ = 0, outer_ = 0, steps_ = 0, model_site_ = -1, fraction_extra_ = -1;
  bool ras_now_ = false;
};

}  // namespace cachelab
