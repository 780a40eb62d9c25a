// DiT with adaLN-Zero (Peebles & Xie, 2023), parameter-for-parameter as the reference
// implementation, so the same checkpoint names load: x_embedder.proj.*, pos_embed,
// t_embedder.mlp.{0,2}.*, y_embedder.embedding_table.weight, blocks.i.{attn.qkv,
// attn.proj, mlp.fc1, mlp.fc2, adaLN_modulation.1}.*, final_layer.{linear,
// adaLN_modulation.1}.*.
//
// Sites (index: name): 0 model, 1 body, then per block i: 2+3i blocks.i,
// 3+3i blocks.i.attn, 4+3i blocks.i.mlp. Site inputs/outputs are the token residual
// stream [B, N, D] except `model` ([B, C, H, W] -> model output).
#pragma once
#include <memory>
#include <string>

#include "models/backbone.h"

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
};

class Dit final : public Backbone {
 public:
  explicit Dit(const DitOptions& options);
  ~Dit() override;
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const at::Tensor& y, SiteHooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  std::vector<int64_t> sample_shape() const override;
  int num_classes() const override { return options_.num_classes; }
  bool learns_sigma() const override { return options_.learn_sigma; }
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  const DitOptions& options() const { return options_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DitOptions options_;
  std::vector<Site> sites_;
};

}  // namespace cachelab
