// Learning-to-Cache (Ma et al., 2024): a router learned per (step, block, sub-layer)
// decides which attention and MLP sub-layers of a DiT are recomputed and which reuse
// their last computed output. The router is a tensor of logits [T, depth, 2] (last axis:
// 0 = attn, 1 = mlp); its score is s = sigmoid(logit).
//
// Inference (`cachelab run`): step 0 computes every sub-layer; at a later step a
// sub-layer is computed when s > threshold and reuses its last computed output otherwise
// (Decision::Reuse; the logged signal is s). With full_every = N > 0, every N-th step
// (0, N, 2N, ...) computes every sub-layer and the router decides only at the others:
// N = 2 is the paper's DiT schedule, where a reused value is always one step old, as in
// training. Rows of full steps (row 0 always) are never read.
//
// Training (caches/l2c_train.h) uses two more modes: `fill` computes every sub-layer and
// stores its output (the cache of step i-1), `blend` answers
//     s * next(call) + (1 - s) * cached      (Decision::Blend)
// without touching the cache, so the output is differentiable in s (the cached value is
// a constant). HarmoniCa's step-wise training (caches/harmonica_train.h) uses `unroll`:
// the same blend, after which the cache follows inference: a sub-layer with s > threshold
// stores its fresh output (detached), one with s <= threshold keeps its older value, so a
// trajectory unrolled in this mode carries the caches the router itself would leave.
// Sites are selected by their tags: kind attn / mlp of the main stream, indexed by
// Site::block; every other site passes through.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

// The command that makes the bundled router; named by every missing-router error.
extern const char* const kL2cTrainCommand;

struct L2cOptions {
  std::string router = "models/weights/l2c-dit-mnist-ddim50.safetensors";
  double threshold = 0.5;
  int full_every = 2;
  template <class V>
  void fields(V& v) {
    v("router", router, "router logits [steps, depth, 2] (safetensors, relative to the project root)");
    v("threshold", threshold, "compute a sub-layer when sigmoid(logit) > threshold, else reuse it");
    v("full_every", full_every, "steps 0, N, 2N, ... compute every sub-layer (2: the paper's DiT schedule); 0 = step 0 only");
  }
  template <class C>
  void check(C& c) const {
    c.require(!router.empty(), "router",
              std::string("must name a router file; make one with `") + kL2cTrainCommand + "`");
    c.require(threshold >= 0 && threshold <= 1, "threshold", "must be in [0, 1]");
    c.require(full_every >= 0, "full_every", "must be >= 0 (0 = only step 0 is computed in full)");
  }
};

// A router file: tensor `logits` float32 [T, depth, 2] plus metadata (the recipe).
void save_l2c_router(const std::string& path, const at::Tensor& logits,
                     const std::map<std::string, std::string>& metadata);
// Throws naming the path and the command that makes it when the file is missing.
at::Tensor load_l2c_router(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

class L2cRouter final : public CachePolicy {
 public:
  enum class Mode { Infer, Fill, Blend, Unroll };

  explicit L2cRouter(const L2cOptions& o);  // loads o.router
  // A router over given logits [T, depth, 2] float32, shared (not copied): the trainer
  // updates them in place. o.router only names them in errors.
  L2cRouter(at::Tensor logits, const L2cOptions& o);

  void set_mode(Mode m) { mode_ = m; }
  Mode mode() const { return mode_; }
  // Blend mode: per-sample steps (int64 [B]) instead of the current step, so that one
  // batch mixes step pairs. A model batch of k*B rows (guidance stacks the conditional
  // and null halves) uses them tiled k times. Undefined = the current step for all rows.
  void set_row_steps(const at::Tensor& steps) { row_steps_ = steps; }
  // Blend and unroll modes with s replaced by the inference decision 1[s > threshold]
  // (evaluation; an unroll with it is the inference trajectory, every sub-layer computed).
  void set_hard_blend(bool hard) { hard_ = hard; }
  const at::Tensor& logits() const { return logits_; }
  int steps() const { return int(logits_.size(0)); }
  int depth() const { return int(logits_.size(1)); }

  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  at::Tensor row_scores(int slot, int64_t rows) const;  // [rows] sigmoid(logit), differentiable

  L2cOptions o_;
  at::Tensor logits_;          // [T, depth, 2]
  std::vector<float> scores_;  // sigmoid(logits), flattened, for inference decisions
  std::vector<int> slot_;      // per site: block * 2 + (mlp ? 1 : 0), or -1
  std::vector<at::Tensor> cache_;  // per site: last computed output (detached)
  Mode mode_ = Mode::Infer;
  at::Tensor row_steps_;
  bool hard_ = false;
  int step_ = 0;
};

}  // namespace cachelab
