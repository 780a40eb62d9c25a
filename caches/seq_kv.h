// Masked-LM K/V caches that decide per sample and per position (framework/ops.h's sequence
// protocol): before each forward the cache marks which positions the model computes and which
// of the computed positions' keys and values it keeps; every other position's keys and values
// come from the store, where each layer holds one entry per position with the step it was
// computed at. Nothing in models/ or framework/ knows these caches.
//
//   dual_kv    Fast-dLLM's dual cache: at a block's first step (and every `refresh` steps
//              within it) the model computes every position and the cache keeps them all; at
//              the other steps only the current block is computed (the prefix and the masked
//              suffix come from the cache) and the block's fresh keys and values replace its
//              cached ones, as Fast-dLLM's `replace_position` does.
//   window_diffusion  Window-Diffusion (vhicrgit/Window-Diffusion, LLaDA path): phases of
//              `refresh` steps. A phase starts with a full forward that keeps every position.
//              Its window is every decoded position (after that step) and the `window`
//              nearest masked ones; farther masked positions are pruned from attention for the
//              phase. Later steps compute the `active` nearest masked positions and the tokens
//              decoded in the phase (those decoded by its first step only at its second), keep
//              their fresh keys and values, and attend to the window only. Positions not
//              computed get zero logits, so decoding stays within the active ones.
//   vicinity_kv  dInfer's vicinity refresh (inclusionAI/dInfer, VicinityCacheIteration): the dual
//              cache whose non-refresh steps compute a window wider than the block, `before`
//              positions left of it and `after` right of it, and keep the window's fresh keys
//              and values, so the block's neighbourhood is never older than one step.
//              before = after = 0 is dual_kv.
//   dkv_cache  dKV-Cache-Decode's delayed caching: a token's keys and values are kept one step
//              after it is decoded (the step that decodes it still sees it as MASK; the next
//              step computes it with its token and keeps the result). Steps compute the
//              still-masked positions and those decoded at the previous step; the first two
//              steps of a block and every `refresh`-th step compute everything and keep every
//              non-masked position (the reference's `cache_reloading_step`).
//   block_kv   Fast-dLLM v2's hierarchical cache, for a block-causal model (llada's block_size):
//              the block-level cache keeps the keys and values of finished blocks (positions
//              < SeqForward::settled, final: they see no later position) once, computed with
//              their final tokens, and never recomputes them; every step computes the current
//              block (from its first position to the end the model computes), which is exact.
//              On a topological model (llada's topological, WeDLM) the settled positions are the
//              leading run of observed tokens: the exact prefix cache of causal attention; on a
//              TiDAR model (llada's tidar) the committed prefix (the tidar pipeline's context).
//              With `sub_block` the pipeline's blocks are sub-blocks of the model's: at a
//              sub-block's first step (and every `refresh` steps) the model's current block is
//              computed and kept too, and the other steps compute the sub-block only, reading
//              the rest of the block (decoded sub-blocks and masked ones after it) from the
//              store: Fast-dLLM v2's sub-block cache, an approximation (the stored positions
//              do not see the sub-block's decodes until the next refresh).
//
// Rows are per sample; samples that would compute fewer rows than the batch's largest count
// compute extra positions (their latest keys and values are used, not stored), so every
// sample computes the same number. Logged per step on each layer's attention site:
// `kv_hit_rate` (the fraction of the attended keys the store supplied), `kv_drift_k` /
// `kv_drift_v` (at steps that recompute positions the store held: how far the held keys and
// values had drifted from the recomputed ones, relative L2) and `kv_bytes` (the store's size).
#pragma once
#include <ATen/core/Tensor.h>

#include <limits>
#include <vector>

#include "caches/kv_cache.h"
#include "framework/layer.h"
#include "framework/ops.h"

namespace cachelab {

// dual_kv's `refresh` means what prefix_kv's does.
using DualKvOptions = PrefixKvOptions;

struct BlockKvOptions {
  bool sub_block = false;
  int refresh = 0;
  template <class V>
  void fields(V& v) {
    v("sub_block", sub_block, "also cache the model's current block between a pipeline block's (a sub-block's) "
                              "refreshes: the sub-block is computed alone (Fast-dLLM v2's sub-block cache)", false);
    v("refresh", refresh, "with sub_block: also recompute the current block every N steps of a sub-block; 0 = only "
                          "at its first step", 0);
  }
  template <class C>
  void check(C& c) const {
    c.require(refresh >= 0, "refresh", "must be >= 0");
  }
};

struct VicinityKvOptions {
  int before = 8;   // dInfer's prefix_look
  int after = 8;    // dInfer's after_look
  int refresh = 0;  // as dual_kv's
  template <class V>
  void fields(V& v) {
    v("before", before, "positions left of the block also computed (and re-stored) at every step (dInfer's prefix_look)");
    v("after", after, "positions right of the block also computed (and re-stored) at every step (dInfer's after_look)");
    v("refresh", refresh, "also recompute all positions every N steps within a block; 0 = only at a block's first step");
  }
  template <class C>
  void check(C& c) const {
    c.require(before >= 0, "before", "must be >= 0");
    c.require(after >= 0, "after", "must be >= 0");
    c.require(refresh >= 0, "refresh", "must be >= 0");
  }
};

struct DkvCacheOptions {
  int refresh = 4;
  template <class V>
  void fields(V& v) {
    v("refresh", refresh, "recompute every position at steps whose index within the block is a multiple of N "
                          "(dKV-Cache's cache_reloading_step); 1 = every step (no reuse), 0 = only the first two");
  }
  template <class C>
  void check(C& c) const {
    c.require(refresh >= 0, "refresh", "must be >= 0");
  }
};

struct WindowDiffusionOptions {
  int refresh = 5;    // phase length, steps
  int window = 64;    // masked positions a phase keeps visible (the nearest), besides the decoded ones
  int active = 8;     // masked positions computed at a step (the nearest)
  template <class V>
  void fields(V& v) {
    v("refresh", refresh, "phase length in steps (the reference's refresh_cycle / window_size): a phase starts with "
                          "a full forward");
    v("window", window, "the nearest masked positions a phase keeps as keys besides every decoded one (window_tokens); "
                        "farther masked positions are pruned from attention");
    v("active", active, "the nearest masked positions computed at each step of a phase (active_tokens), besides the "
                        "tokens the phase decoded");
  }
  template <class C>
  void check(C& c) const {
    c.require(refresh >= 1, "refresh", "must be >= 1 (1 = a full forward every step)");
    c.require(window >= 1, "window", "must be >= 1");
    c.require(active >= 1 && active <= window, "active", "must be in [1, window]");
  }
};

class SeqKvCache : public Ops {
 public:
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  SeqPlan seq_begin(const SeqForward& f) override;
  at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;

 protected:
  explicit SeqKvCache(const char* name) : name_(name) {}
  struct RowPlan {
    at::Tensor compute;  // [B, L] bool: positions the model computes
    at::Tensor keep;     // [B, L] bool: computed positions whose keys and values the store keeps
    at::Tensor visible;  // [B, L] bool: positions whose keys the queries see; undefined = all
  };
  // When it binds: refuses a backbone it cannot serve (require_sequence, framework/ops.h); by
  // default masked-diffusion LMs, bidirectional or block-causal.
  virtual void check_backbone(const RunContext* ctx) const;
  // `stored`: whether the store holds anything for this sequence. A decision that does not
  // compute every position needs it.
  virtual RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) = 0;
  // The attention itself, over all L keys (K, V [B, H, L, d], the store's with this call's
  // fresh rows written in); the default is the inner ops' (dense) attention. d2Cache reads
  // the attention weights here.
  virtual at::Tensor attend(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V) {
    return Ops::attention(call, q, K, V);
  }
  // attend's default with the attention weights softmax(q K^T / sqrt(d) + mask) [B, H, R, L]
  // beside it, computed as dense_attention does (the inner ops' attention when there is one):
  // for caches that read the weights (d2cache, elastic_cache).
  at::Tensor attend_weighed(const AttnCall& call, const at::Tensor& q, const at::Tensor& K, const at::Tensor& V,
                            at::Tensor& weights);
  static at::Tensor all(const SeqForward& f);
  static at::Tensor positions_between(const SeqForward& f, int64_t begin, int64_t end);
  // This forward's keep mask [B, L] (a cache may widen it between layers: Elastic-Cache), and
  // a layer's store: keys and values [B, H, L, d] and which positions it holds [B, L]
  // (undefined before the layer's first store).
  at::Tensor& keep_mask() { return keep_; }
  // The run (extras, RunContext::add_flops for the cache's own work); null outside a run.
  RunContext* run_context() const { return ctx_; }
  struct Stored {
    at::Tensor k, v, valid;
  };
  Stored stored(int layer) const;
  // Replaces the stored values of a layer at the positions `where` [B, L] holds (bool) with
  // V's [B, H, L, d] (dLLM-Cache refreshes every generated position's values).
  void overwrite_values(int layer, const at::Tensor& where, const at::Tensor& V);

 private:
  struct Layer {
    at::Tensor k, v;     // [B, H, L, d]
    at::Tensor valid;    // [B, L] bool: the store holds this position
    double served = 0, seen = 0;
    double drift_k = std::numeric_limits<double>::quiet_NaN();  // this step's, NaN when nothing was re-stored
    double drift_v = std::numeric_limits<double>::quiet_NaN();
  };
  const char* name_;
  std::vector<Layer> layers_;
  std::vector<int> attn_site_;
  RunContext* ctx_ = nullptr;
  int hit_extra_ = -1, drift_k_extra_ = -1, drift_v_extra_ = -1, bytes_extra_ = -1;
  StepIndex step_;
  at::Tensor keep_;     // [B, L] bool, this forward
  at::Tensor visible_;  // [B, L] bool, this forward; undefined = all
  bool stored_ = false;
  int64_t length_ = 0;  // L of the stored sequence
};

// Fast-dLLM v2's hierarchical cache for a block-causal model (llada's block_size).
class BlockKvCache final : public SeqKvCache {
 public:
  explicit BlockKvCache(const BlockKvOptions& o) : SeqKvCache("block_kv"), o_(o) {}

 private:
  void check_backbone(const RunContext* ctx) const override;
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  BlockKvOptions o_;
  at::Tensor exact_;  // [B, L] bool: positions stored once their block had finished
};

class DualKvCache final : public SeqKvCache {
 public:
  explicit DualKvCache(const DualKvOptions& o) : SeqKvCache("dual_kv"), o_(o) {}

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  DualKvOptions o_;
};

class VicinityKvCache final : public SeqKvCache {
 public:
  explicit VicinityKvCache(const VicinityKvOptions& o) : SeqKvCache("vicinity_kv"), o_(o) {}

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  VicinityKvOptions o_;
};

class DkvCache final : public SeqKvCache {
 public:
  explicit DkvCache(const DkvCacheOptions& o) : SeqKvCache("dkv_cache"), o_(o) {}

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  DkvCacheOptions o_;
};

class WindowDiffusionCache final : public SeqKvCache {
 public:
  explicit WindowDiffusionCache(const WindowDiffusionOptions& o) : SeqKvCache("window_diffusion"), o_(o) {}

 private:
  RowPlan decide(const SeqForward& f, const StepIndex& step, bool stored) override;
  WindowDiffusionOptions o_;
  at::Tensor window_;      // [B, L] bool: this phase's visible keys
  int phase_start_ = -1;   // run step of the phase's full forward
};

}  // namespace cachelab
