// DiT with adaLN-Zero (Peebles & Xie, 2023), parameter-for-parameter as the reference
// implementation, so the same checkpoint names load: x_embedder.proj.*, pos_embed,
// t_embedder.mlp.{0,2}.*, y_embedder.embedding_table.weight, blocks.i.{attn.qkv,
// attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}.*, final_layer.{linear,
// adaLN_modulation.1}.*. Every linear layer runs through the ops (quantizers plug in).
//
// Sites (index: name, kind): 0 model (Model), 1 body (Body), then per block i:
// 2+3i blocks.i (Block), 3+3i blocks.i.attn (Attn), 4+3i blocks.i.mlp (Mlp). Site inputs
// and outputs are the token residual stream [B, N, D] except `model` ([B, C, H, W] ->
// model output). Sub-layer sites output the branch before its adaLN gate and accept a
// row (token) subset: attn then computes the queries of those tokens only (keys and
// values of all), mlp only those tokens.
// Taps: 0 `blocks.0.modulated_input` = modulate(LN(h), shift_msa, scale_msa) of block 0,
// the signal TeaCache reads, fired before `body`.
#pragma once
#include <memory>
#include <string>

#include "framework/backbone.h"

namespace cachelab {

struct DitOptions {
  int input_size = 32;           // image side, pixels
  int patch_size = 4;            // tokens = (input_size / patch_size)^2
  int in_channels = 1;
  int hidden_size = 128;
  int depth = 8;
  int num_heads = 4;
  double mlp_ratio = 4.0;
  int num_classes = 10;
  double class_dropout_prob = 0.1;  // > 0 adds the null-class row used by guidance
  bool learn_sigma = false;         // output 2*in_channels (epsilon, variance interpolation)
  std::string weights;              // safetensors file (relative to the project root); "" = random init
  int64_t init_seed = 0;            // seed of the random initialisation

  template <class V>
  void fields(V& v) {
    v("input_size", input_size, "image side in pixels");
    v("patch_size", patch_size, "patch side in pixels");
    v("in_channels", in_channels, "image channels");
    v("hidden_size", hidden_size, "token width");
    v("depth", depth, "number of DiT blocks");
    v("num_heads", num_heads, "attention heads");
    v("mlp_ratio", mlp_ratio, "MLP hidden width / token width");
    v("num_classes", num_classes, "class labels (a null label is added for guidance)");
    v("class_dropout_prob", class_dropout_prob, "label dropout used in training; > 0 adds the null-label row");
    v("learn_sigma", learn_sigma, "also predict the variance interpolation (2x output channels)");
    v("weights", weights, "safetensors weights (relative to the project root); empty = random init");
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
    c.require(num_classes >= 1, "num_classes", "must be >= 1");
    c.require(class_dropout_prob >= 0 && class_dropout_prob < 1, "class_dropout_prob", "must be in [0, 1)");
  }
};

class Dit final : public Backbone {
 public:
  // Site indices of the table above.
  static constexpr int kSiteModel = 0, kSiteBody = 1;
  static constexpr int kTapModulatedInput = 0;
  static int block_site(int i) { return 2 + 3 * i; }

  explicit Dit(const DitOptions& options);
  ~Dit() override;
  // cond.labels: [B] int64 class labels (num_classes = the null label).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<Tap>& taps() const override { return taps_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override;
  Cond null_cond(const Cond& cond) const override;
  int num_classes() const override { return options_.num_classes; }
  bool learns_sigma() const override { return options_.learn_sigma; }
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;
  const DitOptions& options() const { return options_; }

 private:
  struct Impl;
  struct BlockIds {
    int qkv = 0, proj = 0, fc1 = 0, fc2 = 0, ada = 0;
  };
  struct LinearIds {
    int t_mlp0 = 0, t_mlp2 = 0, final_ada = 0, final_linear = 0;
    std::vector<BlockIds> block;
  };
  std::unique_ptr<Impl> impl_;
  DitOptions options_;
  std::vector<Site> sites_;
  std::vector<Tap> taps_;
  std::vector<LinearRef> linears_;
  LinearIds ids_;
};

}  // namespace cachelab
