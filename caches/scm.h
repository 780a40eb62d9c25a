// Step computation mask (SCM, as cache-dit's steps_computation_mask): a static per-step
// mask, 1 = compute this step, 0 = a step that may be cached, from a named preset or
// given explicitly, over the denoising steps of each outer iteration.
//   Alone (no `inner`): a 0 step skips the whole denoiser stack, reusing the residual
//     (out - in) of the `body` site (else the `model` site) from the last computed step.
//   With `inner` (any dynamic policy): the inner policy sees every call (its warm-up,
//     signals and counters advance as usual); on a 1 step a site it answers with a
//     stand-in is computed after all, on a 0 step its answer stands. Its own caches
//     refresh where it decides to compute (a forced computation does not refresh them).
// Presets (ours; fractions of T steps): the first steps are computed, then one step in
// every n, n growing linearly across the rest, and the last step is computed:
//   slow   first 25%, n 2 -> 2       medium  first 20%, n 2 -> 3
//   fast   first 15%, n 3 -> 4       ultra   first 10%, n 4 -> 6
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "framework/layer.h"
#include "framework/registry.h"

namespace cachelab {

struct ScmOptions {
  std::string preset = "medium";     // slow | medium | fast | ultra | "" (use `mask`)
  std::vector<int> mask;             // explicit per-step mask (1 = compute); overrides preset
  ComponentSpec inner{"cache", {}};  // optional dynamic policy deciding the 0 steps
  template <class V>
  void fields(V& v) {
    v("preset", preset, "named mask: slow | medium | fast | ultra (ignored when `mask` is given)");
    v("mask", mask, "explicit per-step mask, one 0/1 per denoising step (1 = compute)");
    v("inner", inner, "optional dynamic policy that decides the 0 steps (e.g. {type: fbcache})");
  }
  template <class C>
  void check(C& c) const {
    if (mask.empty()) c.one_of("preset", preset, {"slow", "medium", "fast", "ultra"});
    bool binary = true;
    for (int m : mask) binary = binary && (m == 0 || m == 1);
    c.require(binary, "mask", "must hold only 0 and 1");
  }
};

// The preset's mask for `steps` denoising steps (1 = compute).
std::vector<int> scm_preset(const std::string& name, int steps);

class ScmPolicy final : public NestingLayer {
 public:
  ScmPolicy(const ScmOptions& o, const BuildContext& ctx);
  ~ScmPolicy() override;
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  const std::vector<int>& mask() const { return mask_; }

 private:
  ScmOptions o_;
  std::vector<int> mask_;
  int site_ = -1, step_ = 0;
  bool compute_ = true;
  at::Tensor residual_;
};

}  // namespace cachelab
