#include "models/dit.h"

#include "models/torch_modules.h"

#include <cmath>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr int kFrequencyDim = 256;      // sinusoidal timestep features fed to t_embedder
constexpr double kLayerNormEps = 1e-6;  // as the reference DiT

at::Tensor layer_norm(const at::Tensor& x) {
  return at::layer_norm(x, {x.size(-1)}, {}, {}, kLayerNormEps);
}
at::Tensor modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1);
}

// 1-D sin-cos features of positions `pos` for `dim` channels: [sin(pos w), cos(pos w)].
at::Tensor sincos_1d(int dim, const at::Tensor& pos) {
  auto omega = at::arange(dim / 2, at::kDouble) / (dim / 2.0);
  omega = 1.0 / at::pow(10000.0, omega);
  auto out = pos.to(at::kDouble).reshape({-1, 1}) * omega.reshape({1, -1});
  return at::cat({at::sin(out), at::cos(out)}, 1);
}

// The fixed 2-D position table of the reference DiT: first half of the channels encodes
// the column, second half the row; tokens in row-major order.
at::Tensor sincos_2d(int dim, int grid) {
  auto idx = at::arange(grid * grid, at::kLong);
  auto col = idx.remainder(grid), row = idx.div(grid, "floor");
  return at::cat({sincos_1d(dim / 2, col), sincos_1d(dim / 2, row)}, 1).to(at::kFloat).unsqueeze(0);
}

// Parameter holders with the reference names; the forward lives in Dit::forward and calls
// every linear layer through the ops.
struct BlockImpl : torch::nn::Module {
  BlockImpl(int dim, int heads, int mlp_hidden) {
    attn = register_module("attn", modules::Attn(dim));
    mlp = register_module("mlp", modules::Mlp(dim, mlp_hidden));
    adaLN_modulation = register_module(
        "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, 6 * dim)));
  }
  modules::Attn attn{nullptr};
  modules::Mlp mlp{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(Block);

struct FinalLayerImpl : torch::nn::Module {
  FinalLayerImpl(int dim, int patch, int out_channels) {
    linear = register_module("linear", torch::nn::Linear(dim, patch * patch * out_channels));
    adaLN_modulation = register_module(
        "adaLN_modulation", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(dim, 2 * dim)));
  }
  torch::nn::Linear linear{nullptr};
  torch::nn::Sequential adaLN_modulation{nullptr};
};
TORCH_MODULE(FinalLayer);

struct PatchEmbedImpl : torch::nn::Module {
  PatchEmbedImpl(int in_ch, int dim, int patch) {
    proj = register_module("proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(in_ch, dim, patch).stride(patch)));
  }
  at::Tensor forward(const at::Tensor& x) { return proj(x).flatten(2).transpose(1, 2); }  // [B, N, D]
  torch::nn::Conv2d proj{nullptr};
};
TORCH_MODULE(PatchEmbed);

struct TimestepEmbedderImpl : torch::nn::Module {
  explicit TimestepEmbedderImpl(int dim) {
    mlp = register_module("mlp", torch::nn::Sequential(torch::nn::Linear(kFrequencyDim, dim), torch::nn::SiLU(),
                                                       torch::nn::Linear(dim, dim)));
  }
  torch::nn::Sequential mlp{nullptr};
};
TORCH_MODULE(TimestepEmbedder);

struct LabelEmbedderImpl : torch::nn::Module {
  LabelEmbedderImpl(int classes, int dim, bool null_row) {
    embedding_table = register_module("embedding_table", torch::nn::Embedding(classes + (null_row ? 1 : 0), dim));
  }
  torch::nn::Embedding embedding_table{nullptr};
};
TORCH_MODULE(LabelEmbedder);

}  // namespace

// Sinusoidal timestep features [cos(t w), sin(t w)] fed to t_embedder (float32, t's device).
at::Tensor timestep_features(const at::Tensor& t) {
  const int half = kFrequencyDim / 2;
  auto freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / half);
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::cos(args), at::sin(args)}, 1);
}

struct Dit::Impl : torch::nn::Module {
  explicit Impl(const DitOptions& o) {
    const int out_ch = o.learn_sigma ? 2 * o.in_channels : o.in_channels;
    const int grid = o.input_size / o.patch_size;
    x_embedder = register_module("x_embedder", PatchEmbed(o.in_channels, o.hidden_size, o.patch_size));
    t_embedder = register_module("t_embedder", TimestepEmbedder(o.hidden_size));
    y_embedder = register_module("y_embedder", LabelEmbedder(o.num_classes, o.hidden_size, o.class_dropout_prob > 0));
    pos_embed = register_parameter("pos_embed", sincos_2d(o.hidden_size, grid), /*requires_grad=*/false);
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int i = 0; i < o.depth; ++i)
      blocks->push_back(Block(o.hidden_size, o.num_heads, int(o.hidden_size * o.mlp_ratio)));
    final_layer = register_module("final_layer", FinalLayer(o.hidden_size, o.patch_size, out_ch));
  }

  // The reference DiT's initialize_weights().
  void initialize(int64_t seed) {
    torch::NoGradGuard guard;
    torch::manual_seed(seed);
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::Linear>()) {
        torch::nn::init::xavier_uniform_(lin->weight);
        torch::nn::init::zeros_(lin->bias);
      }
    auto w = x_embedder->proj->weight;
    torch::nn::init::xavier_uniform_(w.view({w.size(0), -1}));
    torch::nn::init::zeros_(x_embedder->proj->bias);
    torch::nn::init::normal_(y_embedder->embedding_table->weight, 0.0, 0.02);
    for (int i : {0, 2})
      torch::nn::init::normal_(t_embedder->mlp[i]->as<torch::nn::Linear>()->weight, 0.0, 0.02);
    for (auto& b : *blocks) {
      auto* lin = b->as<BlockImpl>()->adaLN_modulation[1]->as<torch::nn::Linear>();
      torch::nn::init::zeros_(lin->weight);
      torch::nn::init::zeros_(lin->bias);
    }
    auto* fin = final_layer->adaLN_modulation[1]->as<torch::nn::Linear>();
    torch::nn::init::zeros_(fin->weight);
    torch::nn::init::zeros_(fin->bias);
    torch::nn::init::zeros_(final_layer->linear->weight);
    torch::nn::init::zeros_(final_layer->linear->bias);
  }

  PatchEmbed x_embedder{nullptr};
  TimestepEmbedder t_embedder{nullptr};
  LabelEmbedder y_embedder{nullptr};
  at::Tensor pos_embed;
  torch::nn::ModuleList blocks{nullptr};
  FinalLayer final_layer{nullptr};
};

Dit::Dit(const DitOptions& o) : options_(o) {
  CL_CHECK(o.patch_size > 0 && o.input_size % o.patch_size == 0,
           "dit: input_size " << o.input_size << " is not a multiple of patch_size " << o.patch_size);
  CL_CHECK(o.num_heads > 0 && o.hidden_size % o.num_heads == 0,
           "dit: hidden_size " << o.hidden_size << " is not a multiple of num_heads " << o.num_heads);
  CL_CHECK(o.hidden_size % 4 == 0, "dit: hidden_size must be a multiple of 4 (2-D sin-cos positions)");
  CL_CHECK(o.depth >= 1, "dit: depth must be >= 1");
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize(o.init_seed);
  if (!o.weights.empty()) {
    load(resolve_path(o.weights));
  }

  // Site table with analytic FLOPs per sample (multiply-add = 2), children excluded.
  const double N = std::pow(o.input_size / o.patch_size, 2), D = o.hidden_size, M = int(D * o.mlp_ratio);
  const double P = o.patch_size * o.patch_size, C = o.in_channels, Cout = o.learn_sigma ? 2 * C : C;
  const double embed = 2 * N * P * C * D + 2 * (kFrequencyDim * D + D * D);
  const double final_layer = 2 * D * 2 * D + 2 * N * D * P * Cout;
  sites_.push_back({"model", -1, embed + final_layer, SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < o.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 2 * D * 6 * D, SiteKind::Block, i});
    // attn: the qkv projection runs on every token (keys and values) even when only some
    // rows (queries) are asked for; scores, weighted sum and output projection scale.
    sites_.push_back({b + ".attn", blk, 2 * N * D * 3 * D + 4 * N * N * D + 2 * N * D * D, SiteKind::Attn, i, 0,
                      /*rows=*/true, 2 * N * D * 3 * D});
    sites_.push_back({b + ".mlp", blk, 4 * N * D * M, SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }
  taps_.push_back({"blocks.0.modulated_input", 0, TapKind::ModulatedInput});

  // Every linear layer by checkpoint name; the forward calls them through the ops.
  auto add = [&](const std::string& name, torch::nn::LinearImpl* l, int block, LinearRole role) {
    linears_.push_back({name, l->weight, l->bias, block, role});
    return int(linears_.size()) - 1;
  };
  Impl& m = *impl_;
  ids_.t_mlp0 = add("t_embedder.mlp.0", m.t_embedder->mlp[0]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  ids_.t_mlp2 = add("t_embedder.mlp.2", m.t_embedder->mlp[2]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  for (int i = 0; i < o.depth; ++i) {
    auto& blk = *m.blocks[size_t(i)]->as<BlockImpl>();
    const std::string b = "blocks." + std::to_string(i);
    BlockIds id;
    id.qkv = add(b + ".attn.qkv", blk.attn->qkv.get(), i, LinearRole::Qkv);
    id.proj = add(b + ".attn.proj", blk.attn->proj.get(), i, LinearRole::Proj);
    id.fc1 = add(b + ".mlp.fc1", blk.mlp->fc1.get(), i, LinearRole::Fc1);
    id.fc2 = add(b + ".mlp.fc2", blk.mlp->fc2.get(), i, LinearRole::Fc2);
    id.ada = add(b + ".adaLN_modulation.1", blk.adaLN_modulation[1]->as<torch::nn::Linear>(), i, LinearRole::Modulation);
    ids_.block.push_back(id);
  }
  ids_.final_ada = add("final_layer.adaLN_modulation.1", m.final_layer->adaLN_modulation[1]->as<torch::nn::Linear>(), -1, LinearRole::Modulation);
  ids_.final_linear = add("final_layer.linear", m.final_layer->linear.get(), -1, LinearRole::Head);
}

Dit::~Dit() = default;

std::vector<int64_t> Dit::sample_shape() const {
  return {options_.in_channels, options_.input_size, options_.input_size};
}

at::Tensor Dit::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  Impl& m = *impl_;
  Ops& ops = hooks.ops();
  const int p = options_.patch_size, grid = options_.input_size / p;
  const int out_ch = options_.learn_sigma ? 2 * options_.in_channels : options_.in_channels;
  const int heads = options_.num_heads;
  CL_CHECK(cond.labels.defined(), "dit: the condition needs class labels");
  auto lin = [&](int id, const at::Tensor& v) { return ops.linear(id, v); };
  return hooks.at(kSiteModel, x, [&](const at::Tensor& xin) {
    auto h = m.x_embedder->forward(xin) + m.pos_embed;
    // t_embedder: sinusoidal features -> Linear -> SiLU -> Linear (reference layout).
    auto c = lin(ids_.t_mlp2, at::silu(lin(ids_.t_mlp0, timestep_features(t).to(h.scalar_type())))) +
             m.y_embedder->embedding_table->forward(cond.labels);
    // TeaCache's signal: block 0's timestep-modulated input, computed only when a layer listens.
    hooks.tap(kTapModulatedInput, [&] {
      auto mod = lin(ids_.block[0].ada, at::silu(c)).chunk(6, 1);
      return modulate(layer_norm(h), mod[0], mod[1]);
    });
    h = hooks.at(kSiteBody, h, [&](const at::Tensor& hin) {
      auto z = hin;
      for (int i = 0; i < options_.depth; ++i) {
        const BlockIds& b = ids_.block[size_t(i)];
        z = hooks.at(block_site(i), z, [&](const at::Tensor& zin) {
          auto mod = lin(b.ada, at::silu(c)).chunk(6, 1);
          auto a = hooks.at(block_site(i) + 1, {zin}, [&](const SiteCall& call) -> Tensors {
            const auto& u = call.inputs[0];
            const int64_t B = u.size(0), N = u.size(1), D = u.size(2), hd = D / heads;
            auto q_k_v = lin(b.qkv, modulate(layer_norm(u), mod[0], mod[1])).reshape({B, N, 3, heads, hd})
                             .permute({2, 0, 3, 1, 4});
            auto q = q_k_v[0], k = q_k_v[1], v = q_k_v[2];
            if (call.rows.defined()) q = q.index_select(2, call.rows);  // only these tokens' queries
            AttnCall ac;
            ac.layer = i;
            auto o = ops.attention(ac, q, k, v);
            return {lin(b.proj, o.transpose(1, 2).reshape({B, q.size(2), D}))};
          })[0];
          // Gated residuals, z + g * branch, with the sum done in place on the fresh product
          // (addition commutes exactly in IEEE arithmetic: the same bits, one allocation less).
          auto z1 = (mod[2].unsqueeze(1) * a).add_(zin);
          auto f = hooks.at(block_site(i) + 2, {z1}, [&](const SiteCall& call) -> Tensors {
            auto u = call.rows.defined() ? call.inputs[0].index_select(1, call.rows) : call.inputs[0];
            return {lin(b.fc2, at::gelu(lin(b.fc1, modulate(layer_norm(u), mod[3], mod[4])), "tanh"))};
          })[0];
          return (mod[5].unsqueeze(1) * f).add_(z1);
        });
      }
      return z;
    });
    auto fmod = lin(ids_.final_ada, at::silu(c)).chunk(2, 1);
    auto out = lin(ids_.final_linear, modulate(layer_norm(h), fmod[0], fmod[1]));  // [B, N, p*p*out_ch]
    const int64_t B = out.size(0);
    out = out.reshape({B, grid, grid, p, p, out_ch}).permute({0, 5, 1, 3, 2, 4});
    return out.reshape({B, out_ch, grid * p, grid * p});
  });
}

Cond Dit::null_cond(const Cond& cond) const {
  CL_CHECK(options_.class_dropout_prob > 0,
           "dit: classifier-free guidance needs the null label, which this model lacks (backbone.class_dropout_prob "
           "is 0); set run.cfg_scale: 1 or use a model trained with label dropout");
  Cond n = cond;
  n.labels = at::full_like(cond.labels, options_.num_classes);
  return n;
}

void Dit::to(at::Device device, at::ScalarType dtype) { impl_->to(device, dtype); }

std::vector<std::pair<std::string, at::Tensor>> Dit::named_tensors() { return modules::named_tensors(*impl_); }

std::vector<at::Tensor> Dit::trainable_parameters() { return modules::trainable_parameters(*impl_); }

void Dit::load(const std::string& path) {
  load_into(named_tensors(), path,
            "cachelab train configs/train/dit-mnist.yaml` for the bundled DiT, or `tools/convert_dit.py` for the public "
            "DiT checkpoints (docs/full-size.md)");
}

void Dit::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, named_tensors(), std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

int64_t Dit::num_parameters() { return modules::num_parameters(*impl_); }

}  // namespace cachelab
