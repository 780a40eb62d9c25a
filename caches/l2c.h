// Learning-to-Cache (Ma et al., 2024): a router learned per (step, routed site) decides
// which of a backbone's cacheable sites are recomputed and which reuse their last
// computed output. The router is a tensor of logits [T, rows, kinds]; its score is
// s = sigmoid(logit). Which sites are routed (the layout, l2c_layout below) follows the
// backbone's site table:
//   attn_mlp (DiTs): the attn and mlp sub-layers of the main stream (stream 0), logits
//     [T, depth, 2]: row = Site::block, kind 0 = attn, 1 = mlp;
//   branch (U-Nets, any backbone with branch sites): the skip branches, logits
//     [T, levels, 1]: row = Site::block of the branch (its level; branches.0 holds
//     everything below the top level, branches.1 the level below, and so on).
// A router file records its layout, the routed sites' names and the digest of the
// backbone's weights (files without them are DiT routers: layout attn_mlp, any weights);
// a router is refused, naming both sides, on a backbone whose layout, sites, weights,
// rows or step count differ.
//
// Inference (`cachelab run`): step 0 computes every routed site; at a later step a site
// is computed when s > threshold and reuses its last computed output otherwise
// (Decision::Reuse; the logged signal is s). With full_every = N > 0, every N-th step
// (0, N, 2N, ...) computes every site and the router decides only at the others: N = 2 is
// the paper's DiT schedule, where a reused value is always one step old, as in training.
// Rows of full steps (row 0 always) are never read. Nested routed sites (a U-Net's
// branches) decide on their own; an inner branch is not called at all while its outer
// branch is reused.
//
// Training (caches/l2c_train.h) uses two more modes: `fill` computes every site and
// stores its output (the cache of step i-1), `blend` answers
//     s * next(call) + (1 - s) * cached      (Decision::Blend)
// without touching the cache, so the output is differentiable in s (the cached value is
// a constant). HarmoniCa's step-wise training (caches/harmonica_train.h) uses `unroll`:
// the same blend, after which the cache follows inference: a site with s > threshold
// stores its fresh output (detached), one with s <= threshold keeps its older value, so a
// trajectory unrolled in this mode carries the caches the router itself would leave.
// Every site outside the layout passes through.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "framework/config.h"
#include "framework/layer.h"

namespace cachelab {

// The command that makes the bundled router; named by every missing-router error.
extern const char* const kL2cTrainCommand;

struct L2cOptions {
  std::string router = "models/weights/l2c-dit-mnist-ddim50.safetensors";
  double threshold = 0.5;
  int full_every = 2;
  ComponentSpec train{"router_trainer", {}};
  template <class V>
  void fields(V& v) {
    v("router", router,
      "router logits [steps, depth, 2] (DiT attn/mlp) or [steps, levels, 1] (U-Net branches) (safetensors, relative "
      "to the project root)");
    v("train", train,
      "a router trainer ({type: l2c, lambda: 0.0003}, or type harmonica; the keys of a `model: l2c` recipe's train map): "
      "the router is trained on demand for the run's backbone and sampler and stored under <results>/artefacts "
      "(`router` is then where); guidance and threads default to the run's, full_every to this cache's",
      ComponentSpec{"router_trainer", {}});
    v("threshold", threshold, "compute a routed site when sigmoid(logit) > threshold, else reuse it");
    v("full_every", full_every, "steps 0, N, 2N, ... compute every routed site (2: the paper's DiT schedule); 0 = step 0 only");
  }
  template <class C>
  void check(C& c) const {
    c.require(!router.empty(), "router",
              std::string("must name a router file; make one with `") + kL2cTrainCommand + "`");
    c.require(threshold >= 0 && threshold <= 1, "threshold", "must be in [0, 1]");
    c.require(full_every >= 0, "full_every", "must be >= 0 (0 = only step 0 is computed in full)");
  }
};

// Which sites of a backbone a router routes: the slot of site i is slot[i] = row * kinds +
// kind (-1: passes through), its logit logits[step][row][kind].
struct L2cLayout {
  std::string name;                // "attn_mlp" or "branch" (above)
  std::string row_unit;            // what a row is, for errors: "blocks" or "branch levels"
  int rows = 0, kinds = 0;         // logits [T, rows, kinds]
  int routed = 0;                  // number of routed sites
  std::vector<int> slot;           // per site of the table
  std::vector<std::string> names;  // per slot: the routed site's name ("a+b" if two share it)
  std::string site_list() const;   // names joined by ","
};
// The layout of a site table: `branch` when it has branch sites (Site::block >= 0), else
// `attn_mlp`; routed == 0 when it has neither.
L2cLayout l2c_layout(const std::vector<Site>& sites);
// Metadata keys of a router file that tie it to a backbone.
extern const char* const kL2cLayoutKey;          // the layout's name
extern const char* const kL2cSitesKey;           // L2cLayout::site_list()
extern const char* const kL2cBackboneDigestKey;  // file_digest of the backbone's weights

// A router file: tensor `logits` float32 [T, rows, kinds] plus metadata (the recipe, and
// the layout keys above when written by the trainer).
void save_l2c_router(const std::string& path, const at::Tensor& logits,
                     const std::map<std::string, std::string>& metadata);
// Throws naming the path and the command that makes it when the file is missing.
at::Tensor load_l2c_router(const std::string& path, std::map<std::string, std::string>* metadata = nullptr);

class L2cRouter final : public CachePolicy {
 public:
  enum class Mode { Infer, Fill, Blend, Unroll };

  explicit L2cRouter(const L2cOptions& o);  // loads o.router (and its metadata)
  // A router over given logits [T, rows, kinds] float32, shared (not copied): the trainer
  // updates them in place; their shape is checked against the backbone's layout at
  // begin_run. o.router only names them in errors.
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
  int rows() const { return int(logits_.size(1)); }
  int kinds() const { return int(logits_.size(2)); }
  // The layout bound at the last begin_run.
  const L2cLayout& layout() const { return layout_; }

  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override { step_ = step.index; }
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  at::Tensor row_scores(int slot, int64_t rows) const;  // [rows] sigmoid(logit), differentiable

  void check_file(const RunContext& ctx) const;  // the file's metadata against the backbone

  L2cOptions o_;
  bool from_file_ = false;
  std::map<std::string, std::string> metadata_;  // of the router file
  L2cLayout layout_;
  at::Tensor logits_;          // [T, rows, kinds]
  std::vector<float> scores_;  // sigmoid(logits), flattened, for inference decisions
  std::vector<at::Tensor> cache_;  // per site: last computed output (detached)
  Mode mode_ = Mode::Infer;
  at::Tensor row_steps_;
  bool hard_ = false;
  int step_ = 0;
};

}  // namespace cachelab
