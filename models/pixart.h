// PixArt-alpha (Chen et al., 2023), parameter-for-parameter as the reference PixArt
// (diffusion/model/nets/PixArt.py of PixArt-alpha/PixArt-alpha), so the public
// PixArt-XL-2-256x256.pth / -512x512.pth state dicts load by name once converted
// (tools/convert_pixart.py): x_embedder.proj.*, t_embedder.mlp.{0,2}.*, t_block.1.* (the
// shared adaLN-single projection), y_embedder.y_proj.{fc1,fc2}.* (caption MLP),
// y_embedder.y_embedding [model_max_length, caption_channels] (the stored null caption),
// blocks.i.{scale_shift_table [6, D], attn.qkv, attn.proj, cross_attn.q_linear,
// cross_attn.kv_linear, cross_attn.proj, mlp.fc1, mlp.fc2}.*, final_layer.{scale_shift_table
// [2, D], linear}.*. The position table pos_embed is computed (as the reference's inference
// does after deleting the stored one), with grid positions divided by lewei_scale. Every
// linear layer runs through the ops (quantizers plug in).
//
// Conditioning: cond.embeddings [B, L, caption_channels] float32 (T5 features, L <=
// model_max_length) and cond.embeddings_mask [B, L] (1 = a real token, 0 = padding; every
// row needs one real token; undefined = all real). Cross-attention sees each sample's real
// tokens only (the reference packs them and uses a block-diagonal attention mask).
// null_cond: cond.negative_embeddings / negative_mask when given (a negative prompt), else
// the stored null caption y_embedding[:L] with the *conditional* row's mask, exactly as the
// reference's DPM-Solver wrapper repeats the prompt mask over both halves of the batch.
//
// Sites (index: name, kind): 0 model (Model), 1 body (Body), then per block i:
// 2+4i blocks.i (Block), 3+4i blocks.i.attn (Attn, self-attention), 4+4i blocks.i.cross_attn
// (Attn, stream 1: it reads the caption stream; PAB's cross group), 5+4i blocks.i.mlp (Mlp).
// Site inputs and outputs are the token residual stream [B, N, D] except `model`
// ([B, C, H, W] -> model output). Sub-layer sites output their branch before its gate
// (self-attention and MLP; cross-attention has none) and accept a row (token) subset:
// attention then computes the queries of those tokens only (keys and values of all image
// tokens, or of the caption), mlp only those tokens. FLOPs assume a full caption of
// model_max_length tokens.
// Taps: 0 `blocks.0.modulated_input` = t2i_modulate(LN(h), shift_msa, scale_msa) of block 0,
// the signal TeaCache reads, fired before `body`.
#pragma once
#include <memory>
#include <string>

#include "framework/backbone.h"

namespace cachelab {

struct PixartOptions {
  int input_size = 32;           // latent side in latent pixels (256 px images: 32; 512 px: 64)
  int patch_size = 2;
  int in_channels = 4;
  int hidden_size = 1152;
  int depth = 28;
  int num_heads = 16;
  double mlp_ratio = 4.0;
  int caption_channels = 4096;   // T5-XXL feature width
  int model_max_length = 120;    // caption tokens (the null caption's length)
  bool learn_sigma = true;       // output 2 x in_channels (epsilon, variance)
  double lewei_scale = 1.0;      // position interpolation: grid positions / lewei_scale (256, 512: 1; 1024: 2)
  std::string weights;           // safetensors file (relative to the project root); "" = random init
  int64_t init_seed = 0;

  template <class V>
  void fields(V& v) {
    v("input_size", input_size, "latent side in latent pixels (image side / 8)");
    v("patch_size", patch_size, "patch side in latent pixels");
    v("in_channels", in_channels, "latent channels");
    v("hidden_size", hidden_size, "token width");
    v("depth", depth, "number of PixArt blocks");
    v("num_heads", num_heads, "attention heads (self and cross)");
    v("mlp_ratio", mlp_ratio, "MLP hidden width / token width");
    v("caption_channels", caption_channels, "width of the text features (T5-XXL: 4096)");
    v("model_max_length", model_max_length, "caption tokens of the stored null caption (120)");
    v("learn_sigma", learn_sigma, "also predict the variance (2x output channels)");
    v("lewei_scale", lewei_scale, "position interpolation: positions divided by this (256/512 px: 1, 1024 px: 2)");
    v("weights", weights, "safetensors weights (tools/convert_pixart.py); empty = random init");
    v("init_seed", init_seed, "seed of the random initialisation");
  }
  template <class C>
  void check(C& c) const {
    c.require(input_size >= 1, "input_size", "must be >= 1");
    c.require(patch_size >= 1 && input_size % patch_size == 0, "patch_size", "must divide input_size");
    c.require(in_channels >= 1, "in_channels", "must be >= 1");
    c.require(hidden_size >= 4 && hidden_size % 4 == 0, "hidden_size", "must be a positive multiple of 4");
    c.require(num_heads >= 1 && hidden_size % num_heads == 0, "num_heads", "must divide hidden_size");
    c.require(depth >= 1, "depth", "must be >= 1");
    c.require(mlp_ratio > 0, "mlp_ratio", "must be > 0");
    c.require(caption_channels >= 1, "caption_channels", "must be >= 1");
    c.require(model_max_length >= 1, "model_max_length", "must be >= 1");
    c.require(lewei_scale > 0, "lewei_scale", "must be > 0");
  }
};

class Pixart final : public Backbone {
 public:
  static constexpr int kSiteModel = 0, kSiteBody = 1;
  static constexpr int kTapModulatedInput = 0;
  static int block_site(int i) { return 2 + 4 * i; }  // + 1 attn, + 2 cross_attn, + 3 mlp

  explicit Pixart(const PixartOptions& options);
  ~Pixart() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<Tap>& taps() const override { return taps_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override;
  Cond null_cond(const Cond& cond) const override;
  bool learns_sigma() const override { return options_.learn_sigma; }
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  // Reads a safetensors file with every tensor of named_tensors() (a stored pos_embed is
  // ignored, as the reference's inference deletes it); names the first missing tensor or
  // shape mismatch, and any tensor the model does not have.
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;
  const PixartOptions& options() const { return options_; }
  // The fixed position table [1, N, D] (lewei_scale applied), as the reference computes it.
  static at::Tensor position_table(int dim, int grid, double lewei_scale);

 private:
  struct Impl;
  struct BlockIds {
    int qkv = 0, proj = 0, q = 0, kv = 0, cproj = 0, fc1 = 0, fc2 = 0;
  };
  struct LinearIds {
    int t_mlp0 = 0, t_mlp2 = 0, t_block = 0, y_fc1 = 0, y_fc2 = 0, final_linear = 0;
    std::vector<BlockIds> block;
  };
  std::unique_ptr<Impl> impl_;
  PixartOptions options_;
  std::vector<Site> sites_;
  std::vector<Tap> taps_;
  std::vector<LinearRef> linears_;
  LinearIds ids_;
};

}  // namespace cachelab
