// K/V caches for sequence models, as ops layers (they wrap the ops below them; every linear
// layer passes through). The model asks Ops::seq_begin before its layers: the cache
// answers from which position on the model must compute, supplies the keys and values of the
// earlier positions in every attention call (they come first and every query sees them), and
// stores the keys and values of finished context (positions < context) as the model computes
// them. Queries and keys carry their positions (AttnCall); masks are not supported.
//
//   prefix_kv   Fast-dLLM's block-wise prefix cache for masked-diffusion LMs (`mdlm`). At the
//               first step of every block (and every `refresh` steps within it) the model
//               computes all positions and the cache stores every layer's K/V of the prefix
//               (prompt + finished blocks); at the other steps the model computes only the
//               current block and the still-masked suffix after it (as Fast-dLLM's prefix
//               cache: the suffix is recomputed, not cached) and attends to the stored prefix.
//               The stored prefix was computed while the current block was still more masked:
//               that staleness is the approximation.
//   rolling_kv  AR video (`video`): the K/V of finished, clean frames are stored once, when the
//               model first computes them (at the first step of the next chunk), and never
//               recomputed; the queries of a chunk starting at frame a attend to frames
//               >= a - window only (cached and computed alike), and older frames are dropped. A window at least as long as the
//               video is exact: bitwise equal to recomputing every past frame at every step.
//               With `sink` the frames [0, sink) (the first chunk, a reference image) are never
//               dropped and every query sees them besides its window (Self Forcing's attention
//               sink frames, Anchor Forcing's anchor cache): memory stays flat as the video grows.
//
// Logged per step (site extras on each layer's attention site): `kv_hit_rate`, the fraction of
// the keys that layer's queries attended to which the cache supplied rather than the model;
// `kv_bytes`, the bytes of keys and values the layer's store holds after the step.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "framework/layer.h"
#include "framework/ops.h"

namespace cachelab {

struct PrefixKvOptions {
  int refresh = 0;  // 0 = recompute all positions only at a block's first step
  template <class V>
  void fields(V& v) {
    v("refresh", refresh, "also recompute all positions (and re-store the prefix) every N steps within a block; "
                          "0 = only at a block's first step, 1 = every step (no reuse)");
  }
  template <class C>
  void check(C& c) const {
    c.require(refresh >= 0, "refresh", "must be >= 0");
  }
};

struct RollingKvOptions {
  int window = 4;  // frames (positions) before the query's own that it may see
  int sink = 0;    // frames [0, sink) are kept and seen by every query
  template <class V>
  void fields(V& v) {
    v("window", window, "past frames a query attends to (frames >= f - window); >= the video length = exact");
    v("sink", sink, "frames [0, sink) (the first chunk, a conditioning frame) are never dropped and every query "
                    "sees them besides its window (attention sink / anchor frames); 0 = none");
  }
  template <class C>
  void check(C& c) const {
    c.require(window >= 0, "window", "must be >= 0");
    c.require(sink >= 0, "sink", "must be >= 0 (frames)");
  }
};

// What every K/V cache logs: each attention layer's site (by block; -1 where none) and the
// `kv_hit_rate` extra. Throws, naming `who`, when the backbone has no attention site.
struct KvLogging {
  std::vector<int> attn_site;
  int hit_extra = -1;
};
KvLogging bind_kv_logging(const char* who, RunContext* ctx);
// Declares the `kv_bytes` site extra (bytes of keys and values a layer's store holds after the
// step) that every K/V store logs; -1 outside a run.
int declare_kv_bytes(RunContext* ctx);

// The positions of an attention call whose rows are the same in every sample (one range per
// forward, as KvCacheOps plans): sample 0's query and key positions (int64, contiguous, CPU).
// Throws, naming `who`, on a call without positions, with a mask, on another device, with
// rows that differ between samples, or positions that do not match q and k.
struct CallPositions {
  at::Tensor q, kv;
};
CallPositions shared_positions(const char* who, const AttnCall& call, const at::Tensor& q, const at::Tensor& k);

// The storage and attention both caches share; subclasses say when to drop it all.
class KvCacheOps : public Ops {
 public:
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  SeqPlan seq_begin(const SeqForward& f) override;
  at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;

 protected:
  KvCacheOps(const char* name, int64_t window, int64_t sink = 0) : name_(name), window_(window), sink_(sink) {}
  // Whether this step recomputes every position (the stored K/V are dropped first).
  virtual bool refresh(const StepIndex& step) const = 0;
  // When it binds: refuses a backbone it cannot serve (require_sequence, framework/ops.h).
  virtual void check_backbone(const RunContext* ctx) const = 0;

 private:
  struct Layer {
    at::Tensor k, v;           // [B, H, n, d] stored keys and values, positions ascending
    std::vector<int64_t> pos;  // [n] their positions
    int64_t end = 0;           // positions < end have been stored (some may be dropped by the window)
    double served = 0, seen = 0;  // keys supplied by the cache / keys attended, this step
  };
  void drop_before(Layer& l, int64_t position);  // keeps the sink

  const char* name_;
  int64_t window_;  // -1 = every stored position is visible
  int64_t sink_;    // positions < sink_ stay stored and visible (with a window)
  std::vector<Layer> layers_;
  std::vector<int> attn_site_;  // per layer: its attention site (for the hit-rate extra), or -1
  RunContext* ctx_ = nullptr;
  int hit_extra_ = -1, bytes_extra_ = -1;
  bool refresh_ = false;
  int64_t context_ = 0;
};

class PrefixKvCache final : public KvCacheOps {
 public:
  explicit PrefixKvCache(const PrefixKvOptions& o) : KvCacheOps("prefix_kv", -1), o_(o) {}

 private:
  bool refresh(const StepIndex& step) const override {
    return step.inner == 0 || (o_.refresh > 0 && step.inner % o_.refresh == 0);
  }
  void check_backbone(const RunContext* ctx) const override {
    require_sequence("prefix_kv", ctx, {SequenceKind::Bidirectional, SequenceKind::BlockCausal},
                     "masked-diffusion LMs (tiny_mdlm, llada); for causal video use rolling_kv");
  }
  PrefixKvOptions o_;
};

class RollingKvCache final : public KvCacheOps {
 public:
  explicit RollingKvCache(const RollingKvOptions& o) : KvCacheOps("rolling_kv", o.window, o.sink) {}

 private:
  bool refresh(const StepIndex&) const override { return false; }  // clean frames never change
  void check_backbone(const RunContext* ctx) const override {
    require_sequence("rolling_kv", ctx, {SequenceKind::Causal},
                     "causal (autoregressive video) models; for a bidirectional masked LM use prefix_kv or dual_kv");
  }
};

}  // namespace cachelab
