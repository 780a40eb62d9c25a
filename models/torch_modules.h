// Parameter holders and helpers shared by the backbones built from torch::nn modules
// (dit, tiny_mdlm, tiny_video). Included by their .cpp files only: it pulls in torch.
// The forwards live in each backbone and call every linear through the ops.
#pragma once
#include <torch/torch.h>

#include <string>
#include <utility>
#include <vector>

namespace cachelab::modules {

// Attention projections with the reference names: qkv [3D, D], proj [D, D].
struct AttnImpl : torch::nn::Module {
  explicit AttnImpl(int dim) {
    qkv = register_module("qkv", torch::nn::Linear(dim, 3 * dim));
    proj = register_module("proj", torch::nn::Linear(dim, dim));
  }
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(Attn);

// MLP with the reference names: fc1 [hidden, D], fc2 [D, hidden].
struct MlpImpl : torch::nn::Module {
  MlpImpl(int dim, int hidden) {
    fc1 = register_module("fc1", torch::nn::Linear(dim, hidden));
    fc2 = register_module("fc2", torch::nn::Linear(hidden, dim));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(Mlp);

// A pre-LayerNorm transformer layer: norm1, attn, norm2, mlp.
struct PreLnLayerImpl : torch::nn::Module {
  PreLnLayerImpl(int dim, int mlp_hidden, double eps) {
    norm1 = register_module("norm1", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)));
    attn = register_module("attn", Attn(dim));
    norm2 = register_module("norm2", torch::nn::LayerNorm(torch::nn::LayerNormOptions({dim}).eps(eps)));
    mlp = register_module("mlp", Mlp(dim, mlp_hidden));
  }
  torch::nn::LayerNorm norm1{nullptr}, norm2{nullptr};
  Attn attn{nullptr};
  Mlp mlp{nullptr};
};
TORCH_MODULE(PreLnLayer);

// Parameters by checkpoint name (shared storage, not copies).
inline std::vector<std::pair<std::string, at::Tensor>> named_tensors(torch::nn::Module& m) {
  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& kv : m.named_parameters(/*recurse=*/true)) out.emplace_back(kv.key(), kv.value());
  return out;
}

inline std::vector<at::Tensor> trainable_parameters(torch::nn::Module& m) {
  std::vector<at::Tensor> out;
  for (auto& p : m.parameters())
    if (p.requires_grad()) out.push_back(p);
  return out;
}

inline int64_t num_parameters(torch::nn::Module& m) {
  int64_t n = 0;
  for (auto& p : m.parameters()) n += p.numel();
  return n;
}

}  // namespace cachelab::modules
