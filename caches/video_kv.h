// K/V caches for autoregressive video diffusion that keep a different set of keys per head
// (and per sample): pruned or compressed stores, as ops layers over the sequence protocol of
// framework/ops.h. The K/V of finished, clean frames are stored once, when the model first
// computes them (as rolling_kv); what a head keeps of them is decided per head.
//
//   forcing_kv  Forcing-KV's head-wise hybrid pruning. While the first `profile_chunks` chunks
//               are generated nothing is pruned and every head's attention is measured: its
//               mass on the cached frames that structured pruning would drop (frames in
//               [sink, a - recent) for the queries of a chunk starting at frame a), averaged
//               over queries, samples and calls. Then a head whose mean mass is below
//               `static_threshold` is static (a head with no such frame in view during the
//               profile counts as 0, static), every other head dynamic. A static head keeps and
//               sees the sink frames [0, sink) and the frames >= a - recent only (cached and
//               computed alike: per head, rolling_kv with `window: recent, sink: sink`). A
//               dynamic head keeps at most `budget` cached frames: while it holds more, the
//               frame whose mean key (over its tokens) is most similar (cosine) to a kept
//               neighbour's is dropped (segments = frames; per sample).
//   video_mla   VideoMLA-style low-rank K/V without training: each (layer, sample, head) fits
//               orthonormal bases [d, rank] of its keys and of its values by SVD on its first
//               `fit_frames` stored frames; from then on only the latents (k U_k, v U_v) are
//               stored and keys and values are reconstructed (latent U^T) for attention. The
//               reconstruction's FLOPs are not counted (MLA absorbs the up-projection into the
//               query and output projections; not done here).
//   temp_cache  TempCache's temporal-correspondence compression. When a finished frame is
//               stored, each token is matched per head to the latest stored token of the same
//               patch (a frame earlier, or older where that one was merged); where the keys'
//               cosine similarity exceeds `threshold` the new token is not stored: the matched
//               token's count grows by one and its value becomes the running mean of the values
//               merged into it (its key stays). Attention adds log(count) to a stored key's score
//               (`count_bias`), so a merged key weighs as the tokens it stands for: identical
//               consecutive frames cost one frame's memory and give the same output. Keys are
//               compared as passed (with rope, rotated by their frame: the rotation lowers the
//               similarity of equal content in different frames).
//
// Each (layer, sample, head) has its own store of [n, d] keys and values ([n, rank] latents
// and their bases for video_mla), so the memory saved is real. Where every head sees the same
// keys with count 1 the attention is one dense call, bitwise what rolling_kv computes;
// otherwise the heads' keys are padded to the longest and masked. Logged per step on each
// layer's attention site: `kv_hit_rate` (the share of the attended keys, averaged over samples
// and heads, that came from the store) and `kv_bytes` (bytes of keys and values held after the
// step, video_mla's bases included; positions and counts are not counted).
#pragma once
#include <ATen/core/Tensor.h>

#include <cstdint>
#include <vector>

#include "framework/layer.h"
#include "framework/ops.h"

namespace cachelab {

struct ForcingKvOptions {
  int sink = 2;                   // frames [0, sink) static heads keep
  int recent = 4;                 // static heads see frames >= a - recent
  int budget = 8;                 // dynamic heads keep at most this many cached frames
  int profile_chunks = 2;         // chunks measured before the heads are classified
  double static_threshold = 0.1;  // mean attention mass a static head may lose
  template <class V>
  void fields(V& v) {
    v("sink", sink, "frames [0, sink) (the first chunk, a reference frame) that static heads keep and always see");
    v("recent", recent,
      "static heads see, besides the sink, the frames >= a - recent (a = the first frame of the "
      "query's chunk); older frames are dropped from their store");
    v("budget", budget,
      "cached frames a dynamic head keeps at most; beyond it the frame most similar to a kept "
      "neighbour (cosine of mean keys) is dropped");
    v("profile_chunks", profile_chunks,
      "chunks generated with nothing pruned while every head's attention is measured; "
      "0 = classify at once (every head static)");
    v("static_threshold", static_threshold,
      "a head whose mean attention mass on the frames static pruning drops "
      "([sink, a - recent)) is below this is static; 0 = every head dynamic, "
      "> 1 = every head static");
  }
  template <class C>
  void check(C& c) const {
    c.require(sink >= 0, "sink", "must be >= 0 (frames)");
    c.require(recent >= 0, "recent", "must be >= 0 (frames)");
    c.require(budget >= 1, "budget", "must be >= 1 (frames)");
    c.require(profile_chunks >= 0, "profile_chunks", "must be >= 0");
    c.require(static_threshold >= 0, "static_threshold", "must be >= 0 (an attention mass)");
  }
};

struct TempCacheOptions {
  double threshold = 0.95;  // cosine similarity above which a token merges into its match
  bool count_bias = true;   // add log(count) to a merged key's score
  template <class V>
  void fields(V& v) {
    v("threshold", threshold,
      "a stored frame's token merges into the latest stored token of the same patch when "
      "their keys' cosine similarity exceeds this (per head); > 1 = never (exact)");
    v("count_bias", count_bias,
      "add log(count) to a merged key's attention score, so it weighs as the tokens it "
      "stands for (false: the ablation without it)");
  }
  template <class C>
  void check(C& c) const {
    c.require(threshold >= -1, "threshold", "must be >= -1 (a cosine similarity; > 1 never merges)");
  }
};

struct VideoMlaOptions {
  int rank = 8;        // latent dimensions per head
  int fit_frames = 2;  // stored frames that fit the bases
  template <class V>
  void fields(V& v) {
    v("rank", rank,
      "dimensions kept of each head's keys and of its values (the latent); >= the head width = exact "
      "up to rounding; capped at the tokens the bases are fitted on");
    v("fit_frames", fit_frames,
      "the first stored frames (the first chunk) whose keys and values fit the bases by "
      "SVD, per layer, sample and head; stored in full until then");
  }
  template <class C>
  void check(C& c) const {
    c.require(rank >= 1, "rank", "must be >= 1");
    c.require(fit_frames >= 1, "fit_frames", "must be >= 1");
  }
};

// The per-head store the caches share.
class HeadKvCache : public Ops {
 public:
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  void begin_step(const StepIndex& step) override;
  void end_step() override;
  SeqPlan seq_begin(const SeqForward& f) override;
  at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) override;
  // Keys a query of the chunk whose count the model gives (`keys` = P (a + c): this cache asks
  // for no window) is scored against, averaged over samples and heads: the stored tokens its
  // head sees (a merged token once) and the computed ones it sees.
  double attended_keys(int layer, double keys) const override;
  // Bytes of keys and values layer `layer` holds (every sample and head); what `kv_bytes` logs.
  double bytes(int layer) const;
  // Tokens (sample b, head h) of layer `layer` holds, and the frames they belong to (ascending, distinct).
  int64_t tokens(int layer, int64_t b, int64_t h) const;
  std::vector<int64_t> stored_frames(int layer, int64_t b, int64_t h) const;

 protected:
  explicit HeadKvCache(const char* name) : name_(name) {}
  struct Cell {                   // one (layer, sample, head)'s store
    at::Tensor k, v;              // [n, d], frames ascending
    std::vector<int64_t> frame;   // [n] each token's frame
    std::vector<int64_t> patch;   // [n] its index within the frame
    std::vector<float> count;     // [n] tokens it stands for (1 unless merged)
    std::vector<int64_t> latest;  // per patch: the index of its latest stored token, -1 = none
    at::Tensor kb, vb;            // [d, r] orthonormal bases when k and v hold latents [n, r]
                                  // (video_mla); undefined = stored in full
  };
  // Whether head h of `layer` sees frame `frame` for the queries of a chunk starting at frame a.
  virtual bool sees(int layer, int64_t h, int64_t frame, int64_t a) const { return true; }
  // Stores one finished frame's tokens, k and v [P, d]; the default appends them.
  virtual void store(int layer, int64_t h, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame);
  // Drops what the head no longer needs before queries starting at frame a.
  virtual void prune(int layer, int64_t h, Cell& cell, int64_t a) {}
  // Attention weights w [B, H, Nq, N] over keys of frames key_frame [B, H, N] (-1 = padding),
  // for queries of the chunk starting at frame a; asked only while observing() is true.
  virtual bool observing() const { return false; }
  virtual void observe(int layer, int64_t a, const at::Tensor& w, const at::Tensor& key_frame) {}
  // Called at seq_begin with the chunk index of the coming forward (context / chunk frames).
  virtual void begin_chunk(int64_t chunk) {}

  static void append(Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame);
  static void keep_tokens(Cell& cell, const std::vector<char>& keep);
  int64_t heads() const { return heads_; }
  bool count_bias_ = false;  // add log(count) to the scores

 private:
  struct Layer {
    std::vector<Cell> cells;  // [b * H + h]
    int64_t end = 0;          // frames < end have been stored
    double served = 0, seen = 0;
  };
  void prune_all(int64_t a);
  const char* name_;
  std::vector<Layer> layers_;
  std::vector<int> attn_site_;
  RunContext* ctx_ = nullptr;
  int hit_extra_ = -1, bytes_extra_ = -1;
  int64_t context_ = 0, start_ = 0, heads_ = 0, batch_ = 0, chunk_frames_ = 0, tokens_per_frame_ = 0;
};

class ForcingKvCache final : public HeadKvCache {
 public:
  explicit ForcingKvCache(const ForcingKvOptions& o) : HeadKvCache("forcing_kv"), o_(o) {}
  void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) override;
  // After the profile: whether head h of `layer` is static, and its measured mass (NaN = none).
  bool classified() const { return classified_; }
  bool is_static(int layer, int64_t h) const;
  double profiled_mass(int layer, int64_t h) const;

 private:
  bool sees(int layer, int64_t h, int64_t frame, int64_t a) const override;
  void prune(int layer, int64_t h, Cell& cell, int64_t a) override;
  bool observing() const override { return !classified_; }
  void observe(int layer, int64_t a, const at::Tensor& w, const at::Tensor& key_frame) override;
  void begin_chunk(int64_t chunk) override;
  ForcingKvOptions o_;
  bool classified_ = false;
  std::vector<std::vector<double>> mass_, calls_;  // [layer][head]: summed mass, calls measured
};

class VideoMlaCache final : public HeadKvCache {
 public:
  explicit VideoMlaCache(const VideoMlaOptions& o) : HeadKvCache("video_mla"), o_(o) {}

 private:
  void store(int layer, int64_t h, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) override;
  VideoMlaOptions o_;
};

class TempCache final : public HeadKvCache {
 public:
  explicit TempCache(const TempCacheOptions& o) : HeadKvCache("temp_cache"), o_(o) { count_bias_ = o.count_bias; }

 private:
  void store(int layer, int64_t h, Cell& cell, const at::Tensor& k, const at::Tensor& v, int64_t frame) override;
  TempCacheOptions o_;
};

}  // namespace cachelab
