// A small transformer that denoises video frames autoregressively (CausVid / Self Forcing
// style): frames of C x H x W are split into p x p patches (tokens); frames are grouped in
// chunks of chunk_frames, attention is bidirectional inside a chunk and causal across
// chunks (a token attends to every token of its own and earlier chunks). The `video`
// pipeline drives it chunk by chunk, the clean frames of finished chunks as context.
// Frame order: a learned table (frame_position: table, max_frames rows) or rotary
// embeddings of the frame index on queries and keys (rope: relative, so a rollout may run
// past the training clips; max_frames then only bounds the video length), or of the frame,
// row and column (rope3d, Wan's 3D RoPE: relative in space too, so copying a patch from
// where it was in the previous frame is a fixed relative offset).
//
// Inputs: x [B, F, C, H, W] float, the clean frames of finished chunks first (Cond::context
// of them, at timestep 0) then the noisy frames of the chunk being generated (at t [B]).
// Output: the predicted noise of the frames after the context, [B, F - context, C, H, W].
//
// Checkpoint names: patch_embed.{weight, bias} (C p p -> D), pos_embed [P, D] (patch),
// frame_embed [max_frames, D] (table only), t_embedder.mlp.{0, 2}.{weight, bias} (sinusoidal timestep
// features -> D, added to every token of a frame), layers.i.{norm1, attn.qkv, attn.proj,
// norm2, mlp.fc1, mlp.fc2}.*, norm_f.*, head.{weight, bias} (D -> C p p).
//
// Sites: 0 model (Model), 1 body (Body), per layer i: 2+3i layers.i (Block), 3+3i
// layers.i.attn (Attn), 4+3i layers.i.mlp (Mlp; accepts a row subset); the residual stream is
// [B, R P, D] for the R frames computed this forward, frame-major.
//
// Chunks are processed one at a time inside every layer: chunk u's queries attend to the
// keys of chunks <= u (no mask needed), and every linear layer runs chunk by chunk, so a
// chunk's numbers never depend on how many chunks are computed with it. That is what makes
// a K/V cache that keeps every past frame bitwise equal to recomputing them all.
// K/V caches: forward asks Ops::seq_begin (causal); the rows it computes must be one trailing
// range of frames [start, F), the same for every sample, start a multiple of chunk_frames
// (Ops::seq_rows is not offered): frames < start come from the cache, and with a window w
// the queries of a chunk starting at frame a see frames >= a - w only, plus the sink frames
// [0, SeqPlan::sink). Each chunk asks Ops::attended_keys how many keys it scores (FLOPs). Attention positions
// are frame indices (every token of a frame has the frame's position). FLOPs are passed per
// call; the site table holds those of max_frames frames, full causal attention, no context.
//
// Training (teacher forcing, models/train_video.h): teacher_forcing() runs a clean copy of
// the clip beside the noisy one in one pass; noisy chunk u attends to the clean chunks < u
// and to itself, exactly what the pipeline shows it at inference (checked in the tests).
#pragma once
#include <algorithm>
#include <memory>
#include <string>

#include "framework/backbone.h"

namespace cachelab {

struct TinyVideoOptions {
  int channels = 1;
  int frame_size = 8;    // H = W, pixels
  int patch_size = 2;
  int hidden_size = 32;
  int depth = 2;
  int num_heads = 2;
  double mlp_ratio = 4.0;
  int max_frames = 16;   // longest video (rows of the frame position table)
  int chunk_frames = 1;  // frames per chunk: bidirectional inside, causal across
  std::string frame_position = "table";  // table | rope
  double rope_theta = 10000.0;
  std::string weights;
  int64_t init_seed = 0;

  template <class V>
  void fields(V& v) {
    v("channels", channels, "channels per frame");
    v("frame_size", frame_size, "frame side in pixels");
    v("patch_size", patch_size, "patch side in pixels");
    v("hidden_size", hidden_size, "token width");
    v("depth", depth, "number of transformer layers");
    v("num_heads", num_heads, "attention heads");
    v("mlp_ratio", mlp_ratio, "MLP hidden width / token width");
    v("max_frames", max_frames, "longest video, in frames (rows of the frame table)");
    v("chunk_frames", chunk_frames, "frames per chunk: attention is bidirectional inside a chunk, causal across chunks");
    v("frame_position", frame_position, "table (learned, max_frames rows) | rope (rotary embedding of the frame index) | "
                                        "rope3d (rotary of frame, row and column: Wan's 3D RoPE)");
    v("rope_theta", rope_theta, "rope: base of the rotary frequencies");
    v("weights", weights, "safetensors weights (relative to the project root); empty = random init");
    v("init_seed", init_seed, "seed of the random initialisation");
  }
  template <class C>
  void check(C& c) const {
    c.require(channels >= 1, "channels", "must be >= 1");
    c.require(frame_size >= 1, "frame_size", "must be >= 1");
    c.require(patch_size >= 1 && frame_size % patch_size == 0, "patch_size", "must divide frame_size");
    c.require(hidden_size >= 2 && hidden_size % 2 == 0, "hidden_size", "must be an even number >= 2");
    c.require(num_heads >= 1 && hidden_size % num_heads == 0, "num_heads", "must divide hidden_size");
    c.require(depth >= 1, "depth", "must be >= 1");
    c.require(mlp_ratio > 0, "mlp_ratio", "must be > 0");
    c.require(max_frames >= 1, "max_frames", "must be >= 1");
    c.require(chunk_frames >= 1, "chunk_frames", "must be >= 1");
    c.one_of("frame_position", frame_position, {"table", "rope", "rope3d"});
    c.require(frame_position == "table" ||
                  ((hidden_size / std::max(num_heads, 1)) % 2 == 0 && hidden_size / std::max(num_heads, 1) >= 6),
              "frame_position", "rope needs an even head width (hidden_size / num_heads; rope3d: >= 6)");
    c.require(rope_theta > 1, "rope_theta", "must be > 1");
  }
};

class TinyVideo final : public Backbone {
 public:
  static constexpr int kSiteModel = 0, kSiteBody = 1;
  static int layer_site(int i) { return 2 + 3 * i; }

  explicit TinyVideo(const TinyVideoOptions& options);
  ~TinyVideo() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  SequenceKind sequence_kind() const override { return SequenceKind::Causal; }
  std::vector<int64_t> sample_shape() const override;  // {max_frames, C, H, W}
  // Four chunks of noise (not max_frames: warm-ups and timings need a representative forward).
  at::Tensor example_input(int64_t batch, const at::TensorOptions& options) const override;
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;
  const TinyVideoOptions& options() const { return options_; }
  int64_t tokens_per_frame() const;
  // Teacher forcing: clean [B, F, C, H, W] and noisy [B, F, C, H, W] copies of a clip, t [B, U]
  // the model timestep of each chunk (U = F / chunk_frames); frames < context are
  // conditioning (only their clean copy is read). Returns the predicted noise of frames
  // [context, F), each noisy chunk having seen the clean chunks before it and itself: what
  // forward() returns for that chunk with the clean frames before it as context.
  at::Tensor teacher_forcing(const at::Tensor& clean, const at::Tensor& noisy, const at::Tensor& t, int64_t context);

  // FLOPs of one sample: attention of one frame's queries over nk keys; the MLP of one
  // frame; the model's own work for r frames computed, o frames output, nt timestep embeddings.
  double attn_frame_flops(double nk) const;
  double mlp_frame_flops() const;
  double model_flops(double r, double o, double nt) const;

 private:
  struct Impl;
  struct LayerIds {
    int qkv = 0, proj = 0, fc1 = 0, fc2 = 0;
  };
  std::unique_ptr<Impl> impl_;
  TinyVideoOptions options_;
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
  std::vector<LayerIds> ids_;
  int patch_ = 0, t0_ = 0, t2_ = 0, head_ = 0;
};

}  // namespace cachelab
