#include "models/pixart.h"

#include "models/torch_modules.h"

#include <cmath>
#include <limits>
#include <map>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr int kFrequencyDim = 256;      // sinusoidal timestep features fed to t_embedder
constexpr double kLayerNormEps = 1e-6;  // as the reference

at::Tensor layer_norm(const at::Tensor& x) { return at::layer_norm(x, {x.size(-1)}, {}, {}, kLayerNormEps); }
// t2i_modulate: shift and scale are [B, 1, D] rows of the adaLN-single table.
at::Tensor t2i_modulate(const at::Tensor& x, const at::Tensor& shift, const at::Tensor& scale) {
  return x * (1 + scale) + shift;
}

// [cos(t w), sin(t w)], w = exp(-log(10000) k / 128): the reference TimestepEmbedder's features.
at::Tensor timestep_features(const at::Tensor& t) {
  const int half = kFrequencyDim / 2;
  auto freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / half);
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::cos(args), at::sin(args)}, 1);
}

at::Tensor sincos_1d(int dim, const at::Tensor& pos) {
  auto omega = 1.0 / at::pow(10000.0, at::arange(dim / 2, at::kDouble) / (dim / 2.0));
  auto out = pos.to(at::kDouble).reshape({-1, 1}) * omega.reshape({1, -1});
  return at::cat({at::sin(out), at::cos(out)}, 1);
}

// The caption MLP y_proj: fc1 [D, E], fc2 [D, D] (tanh GELU between).
struct CaptionMlpImpl : torch::nn::Module {
  CaptionMlpImpl(int in, int dim) {
    fc1 = register_module("fc1", torch::nn::Linear(in, dim));
    fc2 = register_module("fc2", torch::nn::Linear(dim, dim));
  }
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(CaptionMlp);

struct BlockImpl : torch::nn::Module {
  BlockImpl(int dim, int mlp_hidden) {
    scale_shift_table = register_parameter("scale_shift_table", torch::randn({6, dim}) / std::sqrt(double(dim)));
    attn = register_module("attn", modules::Attn(dim));
    cross_attn = register_module("cross_attn", std::make_shared<torch::nn::Module>());
    q_linear = cross_attn->register_module("q_linear", torch::nn::Linear(dim, dim));
    kv_linear = cross_attn->register_module("kv_linear", torch::nn::Linear(dim, 2 * dim));
    proj = cross_attn->register_module("proj", torch::nn::Linear(dim, dim));
    mlp = register_module("mlp", modules::Mlp(dim, mlp_hidden));
  }
  at::Tensor scale_shift_table;
  modules::Attn attn{nullptr};
  std::shared_ptr<torch::nn::Module> cross_attn;
  torch::nn::Linear q_linear{nullptr}, kv_linear{nullptr}, proj{nullptr};
  modules::Mlp mlp{nullptr};
};
TORCH_MODULE(Block);

}  // namespace

at::Tensor Pixart::position_table(int dim, int grid, double lewei_scale) {
  // The reference's get_2d_sincos_pos_embed with base_size = grid: positions k / lewei_scale
  // (float32 as numpy computes them); first half of the channels the column, then the row.
  auto pos = (at::arange(grid, at::kFloat) / float(lewei_scale)).to(at::kDouble);
  auto idx = at::arange(int64_t(grid) * grid, at::kLong);
  auto col = pos.index_select(0, idx.remainder(grid)), row = pos.index_select(0, idx.div(grid, "floor"));
  return at::cat({sincos_1d(dim / 2, col), sincos_1d(dim / 2, row)}, 1).to(at::kFloat).unsqueeze(0);
}

struct Pixart::Impl : torch::nn::Module {
  explicit Impl(const PixartOptions& o) {
    const int D = o.hidden_size, out_ch = o.learn_sigma ? 2 * o.in_channels : o.in_channels;
    x_embedder = register_module("x_embedder", std::make_shared<torch::nn::Module>());
    x_proj = x_embedder->register_module(
        "proj", torch::nn::Conv2d(torch::nn::Conv2dOptions(o.in_channels, D, o.patch_size).stride(o.patch_size)));
    t_embedder = register_module("t_embedder", std::make_shared<torch::nn::Module>());
    t_mlp = t_embedder->register_module(
        "mlp", torch::nn::Sequential(torch::nn::Linear(kFrequencyDim, D), torch::nn::SiLU(), torch::nn::Linear(D, D)));
    t_block = register_module("t_block", torch::nn::Sequential(torch::nn::SiLU(), torch::nn::Linear(D, 6 * D)));
    y_embedder = register_module("y_embedder", std::make_shared<torch::nn::Module>());
    y_proj = y_embedder->register_module("y_proj", CaptionMlp(o.caption_channels, D));
    y_embedding = y_embedder->register_parameter(
        "y_embedding", torch::randn({o.model_max_length, o.caption_channels}) / std::sqrt(double(o.caption_channels)),
        /*requires_grad=*/false);
    pos_embed = register_buffer("pos_embed", Pixart::position_table(D, o.input_size / o.patch_size, o.lewei_scale));
    blocks = register_module("blocks", torch::nn::ModuleList());
    for (int i = 0; i < o.depth; ++i) blocks->push_back(Block(D, int(D * o.mlp_ratio)));
    final_layer = register_module("final_layer", std::make_shared<torch::nn::Module>());
    final_sst = final_layer->register_parameter("scale_shift_table", torch::randn({2, D}) / std::sqrt(double(D)));
    final_linear = final_layer->register_module(
        "linear", torch::nn::Linear(D, o.patch_size * o.patch_size * out_ch));
  }

  // The reference's initialize_weights() (its tables keep their randn / sqrt(D) draws).
  void initialize() {
    torch::NoGradGuard guard;
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::Linear>()) {
        torch::nn::init::xavier_uniform_(lin->weight);
        torch::nn::init::zeros_(lin->bias);
      }
    auto w = x_proj->weight;
    torch::nn::init::xavier_uniform_(w.view({w.size(0), -1}));
    for (auto* l : {t_mlp[0]->as<torch::nn::Linear>(), t_mlp[2]->as<torch::nn::Linear>(),
                    t_block[1]->as<torch::nn::Linear>(), y_proj->fc1.get(), y_proj->fc2.get()})
      torch::nn::init::normal_(l->weight, 0.0, 0.02);
    for (auto& b : *blocks) {
      auto& blk = *b->as<BlockImpl>();
      torch::nn::init::zeros_(blk.proj->weight);
      torch::nn::init::zeros_(blk.proj->bias);
    }
    torch::nn::init::zeros_(final_linear->weight);
    torch::nn::init::zeros_(final_linear->bias);
  }

  std::shared_ptr<torch::nn::Module> x_embedder, t_embedder, y_embedder, final_layer;
  torch::nn::Conv2d x_proj{nullptr};
  torch::nn::Sequential t_mlp{nullptr}, t_block{nullptr};
  CaptionMlp y_proj{nullptr};
  at::Tensor y_embedding, pos_embed, final_sst;
  torch::nn::ModuleList blocks{nullptr};
  torch::nn::Linear final_linear{nullptr};
};

Pixart::Pixart(const PixartOptions& o) : options_(o) {
  CL_CHECK(o.patch_size > 0 && o.input_size % o.patch_size == 0,
           "pixart: input_size " << o.input_size << " is not a multiple of patch_size " << o.patch_size);
  CL_CHECK(o.num_heads > 0 && o.hidden_size % o.num_heads == 0,
           "pixart: hidden_size " << o.hidden_size << " is not a multiple of num_heads " << o.num_heads);
  CL_CHECK(o.hidden_size % 4 == 0, "pixart: hidden_size must be a multiple of 4 (2-D sin-cos positions)");
  CL_CHECK(o.depth >= 1 && o.caption_channels >= 1 && o.model_max_length >= 1 && o.lewei_scale > 0,
           "pixart: depth, caption_channels, model_max_length and lewei_scale must be positive");
  torch::manual_seed(o.init_seed);
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize();
  if (!o.weights.empty()) load(resolve_path(o.weights));

  // Site table with analytic FLOPs per sample (multiply-add = 2), children excluded.
  const double N = std::pow(o.input_size / o.patch_size, 2), D = o.hidden_size, M = int(D * o.mlp_ratio);
  const double P = o.patch_size * o.patch_size, C = o.in_channels, Cout = o.learn_sigma ? 2 * C : C;
  const double L = o.model_max_length, E = o.caption_channels;
  const double embed = 2 * N * P * C * D + 2 * (kFrequencyDim * D + D * D) + 2 * D * 6 * D + 2 * L * (E * D + D * D);
  sites_.push_back({"model", -1, embed + 2 * N * D * P * Cout, SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < o.depth; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 0.0, SiteKind::Block, i});
    sites_.push_back({b + ".attn", blk, 2 * N * D * 3 * D + 4 * N * N * D + 2 * N * D * D, SiteKind::Attn, i, 0,
                      /*rows=*/true, 2 * N * D * 3 * D});
    // Keys and values come from the caption whatever rows are asked for.
    sites_.push_back({b + ".cross_attn", blk, 4 * N * D * D + 4 * L * D * D + 4 * N * L * D, SiteKind::Attn, i, 1,
                      /*rows=*/true, 4 * L * D * D});
    sites_.push_back({b + ".mlp", blk, 4 * N * D * M, SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }
  taps_.push_back({"blocks.0.modulated_input", 0, TapKind::ModulatedInput});

  auto add = [&](const std::string& name, torch::nn::LinearImpl* l, int block, LinearRole role) {
    linears_.push_back({name, l->weight, l->bias, block, role});
    return int(linears_.size()) - 1;
  };
  Impl& m = *impl_;
  ids_.t_mlp0 = add("t_embedder.mlp.0", m.t_mlp[0]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  ids_.t_mlp2 = add("t_embedder.mlp.2", m.t_mlp[2]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  ids_.t_block = add("t_block.1", m.t_block[1]->as<torch::nn::Linear>(), -1, LinearRole::Modulation);
  ids_.y_fc1 = add("y_embedder.y_proj.fc1", m.y_proj->fc1.get(), -1, LinearRole::Embed);
  ids_.y_fc2 = add("y_embedder.y_proj.fc2", m.y_proj->fc2.get(), -1, LinearRole::Embed);
  for (int i = 0; i < o.depth; ++i) {
    auto& blk = *m.blocks[size_t(i)]->as<BlockImpl>();
    const std::string b = "blocks." + std::to_string(i);
    BlockIds id;
    id.qkv = add(b + ".attn.qkv", blk.attn->qkv.get(), i, LinearRole::Qkv);
    id.proj = add(b + ".attn.proj", blk.attn->proj.get(), i, LinearRole::Proj);
    id.q = add(b + ".cross_attn.q_linear", blk.q_linear.get(), i, LinearRole::CrossQ);
    id.kv = add(b + ".cross_attn.kv_linear", blk.kv_linear.get(), i, LinearRole::CrossKv);
    id.cproj = add(b + ".cross_attn.proj", blk.proj.get(), i, LinearRole::CrossProj);
    id.fc1 = add(b + ".mlp.fc1", blk.mlp->fc1.get(), i, LinearRole::Fc1);
    id.fc2 = add(b + ".mlp.fc2", blk.mlp->fc2.get(), i, LinearRole::Fc2);
    ids_.block.push_back(id);
  }
  ids_.final_linear = add("final_layer.linear", m.final_linear.get(), -1, LinearRole::Head);
}

Pixart::~Pixart() = default;

std::vector<int64_t> Pixart::sample_shape() const {
  return {options_.in_channels, options_.input_size, options_.input_size};
}

at::Tensor Pixart::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  Impl& m = *impl_;
  Ops& ops = hooks.ops();
  const PixartOptions& o = options_;
  const int p = o.patch_size, grid = o.input_size / p, heads = o.num_heads;
  const int out_ch = o.learn_sigma ? 2 * o.in_channels : o.in_channels;
  const int64_t B = x.size(0);
  CL_CHECK(cond.embeddings.defined(), "pixart: the condition needs caption embeddings (Cond::embeddings [B, L, "
                                          << o.caption_channels << "]; the image pipeline's `prompts` file)");
  const auto& emb = cond.embeddings;
  CL_CHECK(emb.dim() == 3 && emb.size(0) == B && emb.size(2) == o.caption_channels && emb.size(1) >= 1 &&
               emb.size(1) <= o.model_max_length,
           "pixart: caption embeddings have shape " << shape_str(emb.sizes()) << "; expected [" << B << ", L <= "
                                                    << o.model_max_length << ", " << o.caption_channels << "]");
  const int64_t L = emb.size(1);
  auto lin = [&](int id, const at::Tensor& v) { return ops.linear(id, v); };
  return hooks.at(kSiteModel, x, [&](const at::Tensor& xin) {
    auto h = m.x_proj->forward(xin).flatten(2).transpose(1, 2) + m.pos_embed;
    const auto dtype = h.scalar_type();
    auto temb = lin(ids_.t_mlp2, at::silu(lin(ids_.t_mlp0, timestep_features(t).to(dtype))));  // [B, D]
    auto t0 = lin(ids_.t_block, at::silu(temb)).reshape({B, 6, -1});                            // adaLN-single
    auto y = lin(ids_.y_fc2, at::gelu(lin(ids_.y_fc1, emb.to(h.device(), dtype)), "tanh"));     // [B, L, D]
    // Padding tokens are masked out of every cross-attention (additive -inf).
    at::Tensor kv_mask;
    if (cond.embeddings_mask.defined()) {
      const auto& mk = cond.embeddings_mask;
      CL_CHECK(mk.dim() == 2 && mk.size(0) == B && mk.size(1) == L,
               "pixart: embeddings_mask has shape " << shape_str(mk.sizes()) << "; expected [" << B << ", " << L
                                                    << "]");
      auto real = mk.to(h.device()).ne(0);
      CL_CHECK(real.any(1).all().item<bool>(), "pixart: a caption has no real token (its embeddings_mask row is 0)");
      kv_mask = at::zeros({B, 1, 1, L}, h.options())
                    .masked_fill(real.logical_not().view({B, 1, 1, L}), -std::numeric_limits<double>::infinity());
    }
    auto mods = [&](int i) {
      auto& blk = *m.blocks[size_t(i)]->as<BlockImpl>();
      return (blk.scale_shift_table.unsqueeze(0) + t0).chunk(6, 1);  // 6 x [B, 1, D]
    };
    hooks.tap(kTapModulatedInput, [&] {
      auto mod = mods(0);
      return t2i_modulate(layer_norm(h), mod[0], mod[1]);
    });
    h = hooks.at(kSiteBody, h, [&](const at::Tensor& hin) {
      auto z = hin;
      for (int i = 0; i < o.depth; ++i) {
        const BlockIds& b = ids_.block[size_t(i)];
        z = hooks.at(block_site(i), z, [&](const at::Tensor& zin) {
          auto mod = mods(i);
          auto a = hooks.at(block_site(i) + 1, {zin}, [&](const SiteCall& call) -> Tensors {
            const auto& u = call.inputs[0];
            const int64_t N = u.size(1), D = u.size(2), hd = D / heads;
            auto q_k_v = lin(b.qkv, t2i_modulate(layer_norm(u), mod[0], mod[1]))
                             .reshape({B, N, 3, heads, hd})
                             .permute({2, 0, 3, 1, 4});
            auto q = q_k_v[0], k = q_k_v[1], v = q_k_v[2];
            if (call.rows.defined()) q = q.index_select(2, call.rows);
            AttnCall ac;
            ac.layer = i;
            auto out = ops.attention(ac, q, k, v);
            return {lin(b.proj, out.transpose(1, 2).reshape({B, q.size(2), D}))};
          })[0];
          auto z1 = (mod[2] * a).add_(zin);
          auto c = hooks.at(block_site(i) + 2, {z1}, [&](const SiteCall& call) -> Tensors {
            auto u = call.rows.defined() ? call.inputs[0].index_select(1, call.rows) : call.inputs[0];
            const int64_t Nq = u.size(1), D = u.size(2), hd = D / heads;
            auto q = lin(b.q, u).reshape({B, Nq, heads, hd}).transpose(1, 2);
            auto kv = lin(b.kv, y).reshape({B, L, 2, heads, hd}).permute({2, 0, 3, 1, 4});
            AttnCall ac;
            ac.layer = i;
            ac.mask = kv_mask;
            auto out = ops.attention(ac, q, kv[0], kv[1]);
            return {lin(b.cproj, out.transpose(1, 2).reshape({B, Nq, D}))};
          })[0];
          auto z2 = c.add(z1);
          auto f = hooks.at(block_site(i) + 3, {z2}, [&](const SiteCall& call) -> Tensors {
            auto u = call.rows.defined() ? call.inputs[0].index_select(1, call.rows) : call.inputs[0];
            return {lin(b.fc2, at::gelu(lin(b.fc1, t2i_modulate(layer_norm(u), mod[3], mod[4])), "tanh"))};
          })[0];
          return (mod[5] * f).add_(z2);
        });
      }
      return z;
    });
    auto fmod = (m.final_sst.unsqueeze(0) + temb.unsqueeze(1)).chunk(2, 1);  // T2IFinalLayer: table + t
    auto out = lin(ids_.final_linear, t2i_modulate(layer_norm(h), fmod[0], fmod[1]));
    out = out.reshape({B, grid, grid, p, p, out_ch}).permute({0, 5, 1, 3, 2, 4});
    return out.reshape({B, out_ch, grid * p, grid * p});
  });
}

Cond Pixart::null_cond(const Cond& cond) const {
  CL_CHECK(cond.embeddings.defined(), "pixart: guidance needs caption embeddings to pair the null caption with");
  Cond n = cond;
  if (cond.negative_embeddings.defined()) {
    CL_CHECK(cond.negative_embeddings.dim() == 3 && cond.negative_embeddings.size(0) == cond.embeddings.size(0),
             "pixart: negative_embeddings have shape " << shape_str(cond.negative_embeddings.sizes())
                                                       << "; expected [B, L, E] with B = " << cond.embeddings.size(0));
    n.embeddings = cond.negative_embeddings;
    n.embeddings_mask = cond.negative_mask;
    return n;
  }
  CL_CHECK(cond.embeddings.dim() == 3 && cond.embeddings.size(2) == options_.caption_channels,
           "pixart: caption embeddings have shape " << shape_str(cond.embeddings.sizes()) << "; expected [B, L <= "
                                                    << options_.model_max_length << ", " << options_.caption_channels
                                                    << "] (backbone.caption_channels)");
  const int64_t B = cond.embeddings.size(0), L = cond.embeddings.size(1);
  CL_CHECK(L <= options_.model_max_length,
           "pixart: captions of " << L << " tokens are longer than the null caption (" << options_.model_max_length
                                  << ")");
  n.embeddings = impl_->y_embedding.narrow(0, 0, L).unsqueeze(0).expand({B, L, -1}).to(cond.embeddings.options());
  return n;  // keeps the conditional mask, as the reference's DPM-Solver wrapper does
}

void Pixart::to(at::Device device, at::ScalarType dtype) { impl_->to(device, dtype); }

std::vector<std::pair<std::string, at::Tensor>> Pixart::named_tensors() { return modules::named_tensors(*impl_); }

std::vector<at::Tensor> Pixart::trainable_parameters() { return modules::trainable_parameters(*impl_); }

void Pixart::load(const std::string& path) {
  const std::string hint = "convert the public PixArt-XL-2-256x256.pth / -512x512.pth with tools/convert_pixart.py "
                           "(docs/full-size.md) and check the backbone options (input_size, caption_channels, "
                           "model_max_length, depth, hidden_size) match the checkpoint";
  auto file = read_safetensors(path);
  std::map<std::string, at::Tensor> in;
  for (auto& kv : file.tensors) in.emplace(kv.first, kv.second);
  in.erase("pos_embed");  // recomputed from lewei_scale, as the reference's inference does
  torch::NoGradGuard guard;
  for (auto& kv : named_tensors()) {
    auto it = in.find(kv.first);
    CL_CHECK(it != in.end(), "pixart: " << path << " has no tensor `" << kv.first << "` (expected shape "
                                        << shape_str(kv.second.sizes()) << "); " << hint);
    CL_CHECK(it->second.sizes() == kv.second.sizes(),
             "pixart: " << path << ": tensor `" << kv.first << "` has shape " << shape_str(it->second.sizes())
                        << ", the model expects " << shape_str(kv.second.sizes()) << "; " << hint);
    kv.second.copy_(it->second.to(kv.second.scalar_type()));
    in.erase(it);
  }
  CL_CHECK(in.empty(), "pixart: " << path << " has tensor `" << in.begin()->first
                                  << "` that the model does not have (" << in.size() << " such); " << hint);
}

void Pixart::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, named_tensors(), std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

int64_t Pixart::num_parameters() { return modules::num_parameters(*impl_); }

}  // namespace cachelab
