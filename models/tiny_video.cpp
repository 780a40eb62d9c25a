#include "models/tiny_video.h"

#include "models/torch_modules.h"

#include <algorithm>
#include <cmath>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr double kLayerNormEps = 1e-5;
constexpr int kFrequencyDim = 64;  // sinusoidal timestep features fed to t_embedder

at::Tensor norm(const torch::nn::LayerNorm& ln, const at::Tensor& x) {
  return at::layer_norm(x, {x.size(-1)}, ln->weight, ln->bias, kLayerNormEps);
}

// [cos(t w), sin(t w)] over kFrequencyDim channels, float32 on t's device.
at::Tensor timestep_features(const at::Tensor& t) {
  const int half = kFrequencyDim / 2;
  auto freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / half);
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::cos(args), at::sin(args)}, 1);
}


}  // namespace

struct TinyVideo::Impl : torch::nn::Module {
  explicit Impl(const TinyVideoOptions& o) {
    const int D = o.hidden_size, patch_dim = o.channels * o.patch_size * o.patch_size;
    const int P = (o.frame_size / o.patch_size) * (o.frame_size / o.patch_size);
    patch_embed = register_module("patch_embed", torch::nn::Linear(patch_dim, D));
    pos_embed = register_parameter("pos_embed", torch::zeros({P, D}));
    frame_embed = register_parameter("frame_embed", torch::zeros({o.max_frames, D}));
    t_embedder = register_module("t_embedder", std::make_shared<torch::nn::Module>());
    t_mlp = t_embedder->register_module(
        "mlp", torch::nn::Sequential(torch::nn::Linear(kFrequencyDim, D), torch::nn::SiLU(), torch::nn::Linear(D, D)));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < o.depth; ++i) layers->push_back(modules::PreLnLayer(D, int(D * o.mlp_ratio), kLayerNormEps));
    norm_f = register_module("norm_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({D}).eps(kLayerNormEps)));
    head = register_module("head", torch::nn::Linear(D, patch_dim));
  }
  // Random weights: LibTorch's default layer initialisation (seeded); unit-variance patch and
  // frame position tables, so frames and patches are told apart.
  void initialize(int64_t seed) {
    torch::NoGradGuard guard;
    torch::manual_seed(seed);
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::Linear>()) lin->reset_parameters();
    torch::nn::init::normal_(pos_embed, 0.0, 1.0);
    torch::nn::init::normal_(frame_embed, 0.0, 1.0);
  }
  torch::nn::Linear patch_embed{nullptr};
  at::Tensor pos_embed, frame_embed;
  std::shared_ptr<torch::nn::Module> t_embedder;
  torch::nn::Sequential t_mlp{nullptr};
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm norm_f{nullptr};
  torch::nn::Linear head{nullptr};
};

TinyVideo::TinyVideo(const TinyVideoOptions& o) : options_(o) {
  CL_CHECK(o.patch_size > 0 && o.frame_size % o.patch_size == 0,
           "tiny_video: frame_size " << o.frame_size << " is not a multiple of patch_size " << o.patch_size);
  CL_CHECK(o.num_heads > 0 && o.hidden_size % o.num_heads == 0,
           "tiny_video: hidden_size " << o.hidden_size << " is not a multiple of num_heads " << o.num_heads);
  CL_CHECK(o.depth >= 1 && o.max_frames >= 1 && o.channels >= 1, "tiny_video: depth, max_frames and channels must be >= 1");
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize(o.init_seed);
  if (!o.weights.empty()) load(resolve_path(o.weights));

  const double F = o.max_frames, P = double(tokens_per_frame());
  double attn = 0;
  for (int f = 0; f < o.max_frames; ++f) attn += attn_frame_flops(P * (f + 1));
  sites_.push_back({"model", -1, model_flops(F, F, 1), SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < o.depth; ++i) {
    const std::string b = "layers." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 0.0, SiteKind::Block, i});
    sites_.push_back({b + ".attn", blk, attn, SiteKind::Attn, i});
    sites_.push_back({b + ".mlp", blk, F * mlp_frame_flops(), SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }

  auto add = [&](const std::string& name, torch::nn::LinearImpl* l, int block) {
    linears_.push_back({name, l->weight, l->bias, block});
    return int(linears_.size()) - 1;
  };
  Impl& m = *impl_;
  patch_ = add("patch_embed", m.patch_embed.get(), -1);
  t0_ = add("t_embedder.mlp.0", m.t_mlp[0]->as<torch::nn::Linear>(), -1);
  t2_ = add("t_embedder.mlp.2", m.t_mlp[2]->as<torch::nn::Linear>(), -1);
  for (int i = 0; i < o.depth; ++i) {
    auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
    const std::string b = "layers." + std::to_string(i);
    LayerIds id;
    id.qkv = add(b + ".attn.qkv", layer.attn->qkv.get(), i);
    id.proj = add(b + ".attn.proj", layer.attn->proj.get(), i);
    id.fc1 = add(b + ".mlp.fc1", layer.mlp->fc1.get(), i);
    id.fc2 = add(b + ".mlp.fc2", layer.mlp->fc2.get(), i);
    ids_.push_back(id);
  }
  head_ = add("head", m.head.get(), -1);
}

TinyVideo::~TinyVideo() = default;

int64_t TinyVideo::tokens_per_frame() const {
  const int64_t g = options_.frame_size / options_.patch_size;
  return g * g;
}

std::vector<int64_t> TinyVideo::sample_shape() const {
  return {options_.max_frames, options_.channels, options_.frame_size, options_.frame_size};
}

// Multiply-add = 2 FLOPs; norms, softmax, activations and table lookups are not counted.
double TinyVideo::attn_frame_flops(double nk) const {
  const double D = options_.hidden_size, P = double(tokens_per_frame());
  return 2 * P * D * 3 * D + 4 * P * nk * D + 2 * P * D * D;  // qkv, scores + weighted sum, proj
}
double TinyVideo::mlp_frame_flops() const {
  const double D = options_.hidden_size, M = int(D * options_.mlp_ratio), P = double(tokens_per_frame());
  return 4 * P * D * M;
}
double TinyVideo::model_flops(double r, double o, double nt) const {
  const double D = options_.hidden_size, P = double(tokens_per_frame());
  const double patch_dim = double(options_.channels) * options_.patch_size * options_.patch_size;
  return 2 * r * P * patch_dim * D + nt * 2 * (kFrequencyDim * D + D * D) + 2 * o * P * D * patch_dim;
}

at::Tensor TinyVideo::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  Impl& m = *impl_;
  Ops& ops = hooks.ops();
  const int64_t C = options_.channels, Hs = options_.frame_size, p = options_.patch_size, g = Hs / p;
  CL_CHECK(x.dim() == 5 && x.size(2) == C && x.size(3) == Hs && x.size(4) == Hs,
           "tiny_video: x must be [B, F, " << C << ", " << Hs << ", " << Hs << "]");
  const int64_t F = x.size(1), ctx = cond.context;
  CL_CHECK(F <= options_.max_frames, "tiny_video: " << F << " frames exceed max_frames " << options_.max_frames);
  CL_CHECK(ctx >= 0 && ctx < F, "tiny_video: context " << ctx << " must be in [0, " << F << ")");
  SeqForward sf;
  sf.batch = x.size(0);
  sf.length = F;
  sf.context = ctx;
  sf.block_end = F;
  sf.num_layers = options_.depth;
  sf.step = cond.step;
  sf.causal = true;
  const SeqPlan plan = ops.seq_begin(sf);
  // Frames are computed as one trailing range [S, F), the same for every sample.
  int64_t S = 0;
  if (plan.rows.defined()) {
    S = plan.rows.size(1) > 0 ? plan.rows[0][0].item<int64_t>() : F;
    CL_CHECK(plan.rows.size(1) == F - S && plan.rows.equal(every_row(sf.batch, F).narrow(1, S, F - S)),
             "tiny_video: the ops must ask for one trailing range of frames, the same for every sample");
  }
  CL_CHECK(S <= ctx, "tiny_video: the ops supplies frames up to " << S << ", beyond the context " << ctx);
  const int64_t R = F - S, O = F - ctx, P = tokens_per_frame();
  const int64_t D = options_.hidden_size, heads = options_.num_heads, hd = D / heads;
  // A query of frame f sees frames [first_key(f), f].
  auto first_key = [&](int64_t f) { return plan.window >= 0 ? std::max<int64_t>(0, f - plan.window) : int64_t(0); };
  double attn_cost = 0;
  for (int64_t f = S; f < F; ++f) attn_cost += attn_frame_flops(double(P * (f - first_key(f) + 1)));
  const bool clean = S < ctx;  // clean frames computed: their timestep-0 embedding is needed
  auto lin = [&](int id, const at::Tensor& v) { return ops.linear(id, v); };
  auto frame_rows = [&](const at::Tensor& h, int64_t j) { return h.narrow(1, j * P, P); };

  return hooks.at(kSiteModel, {x}, [&](const SiteCall& mc) -> Tensors {
    const int64_t B = mc.inputs[0].size(0);
    // [B, R, C, H, W] -> [B, R, P, C p p], patches row-major.
    auto patches = mc.inputs[0].narrow(1, S, R).reshape({B, R, C, g, p, g, p}).permute({0, 1, 3, 5, 2, 4, 6})
                       .reshape({B, R, P, C * p * p});
    auto temb = [&](const at::Tensor& tt) {
      return lin(t2_, at::silu(lin(t0_, timestep_features(tt).to(patches.scalar_type()))));
    };
    const at::Tensor noisy_t = temb(t), clean_t = clean ? temb(at::zeros_like(t)) : at::Tensor();
    std::vector<at::Tensor> frames;
    for (int64_t j = 0; j < R; ++j) {
      const int64_t f = S + j;
      frames.push_back(lin(patch_, patches.select(1, j)) + m.pos_embed + m.frame_embed[f] +
                       (f < ctx ? clean_t : noisy_t).unsqueeze(1));
    }
    auto h = hooks.at(kSiteBody, {at::cat(frames, 1)}, [&](const SiteCall& bc) -> Tensors {
      auto z = bc.inputs[0];
      for (int i = 0; i < options_.depth; ++i) {
        auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
        const LayerIds& id = ids_[size_t(i)];
        z = hooks.at(layer_site(i), {z}, [&](const SiteCall& lc) -> Tensors {
          const auto& zin = lc.inputs[0];
          auto a = hooks.at(layer_site(i) + 1, {zin}, [&](const SiteCall& ac) -> Tensors {
            std::vector<at::Tensor> ks, vs, outs;
            for (int64_t j = 0; j < R; ++j) {
              const int64_t f = S + j;
              auto qkv = lin(id.qkv, norm(layer.norm1, frame_rows(ac.inputs[0], j)))
                             .reshape({B, P, 3, heads, hd}).permute({2, 0, 3, 1, 4});
              ks.push_back(qkv[1]);
              vs.push_back(qkv[2]);
              // Keys of the frames computed here that this frame sees; the ops adds earlier ones.
              const int64_t first = std::max(S, first_key(f));
              std::vector<at::Tensor> kk(ks.begin() + (first - S), ks.end()), vv(vs.begin() + (first - S), vs.end());
              AttnCall call;
              call.layer = i;
              call.q_positions = at::full({B, P}, f, at::kLong);
              call.kv_positions = at::arange(first, f + 1, at::kLong).repeat_interleave(P).unsqueeze(0).expand({B, -1});
              auto o = ops.attention(call, qkv[0], at::cat(kk, 2), at::cat(vv, 2));
              outs.push_back(lin(id.proj, o.transpose(1, 2).reshape({B, P, D})));
            }
            return {at::cat(outs, 1)};
          }, attn_cost)[0];
          auto z1 = zin + a;
          auto f = hooks.at(layer_site(i) + 2, {z1}, [&](const SiteCall& fc) -> Tensors {
            auto mlp = [&](const at::Tensor& u) { return lin(id.fc2, at::gelu(lin(id.fc1, norm(layer.norm2, u)))); };
            if (fc.rows.defined()) return {mlp(fc.inputs[0].index_select(1, fc.rows))};
            std::vector<at::Tensor> outs;
            for (int64_t j = 0; j < R; ++j) outs.push_back(mlp(frame_rows(fc.inputs[0], j)));
            return {at::cat(outs, 1)};
          }, double(R) * mlp_frame_flops())[0];
          return {z1 + f};
        }, 0.0)[0];
      }
      return {z};
    }, 0.0)[0];
    // Predicted noise of the frames after the context, frame by frame.
    std::vector<at::Tensor> outs;
    for (int64_t f = ctx; f < F; ++f) outs.push_back(lin(head_, norm(m.norm_f, frame_rows(h, f - S))));
    auto out = at::stack(outs, 1);  // [B, O, P, C p p]
    return {out.reshape({B, O, g, g, C, p, p}).permute({0, 1, 4, 2, 5, 3, 6}).reshape({B, O, C, Hs, Hs})};
  }, model_flops(double(R), double(O), clean ? 2.0 : 1.0))[0];
}

void TinyVideo::to(at::Device device, at::ScalarType dtype) { impl_->to(device, dtype); }

std::vector<std::pair<std::string, at::Tensor>> TinyVideo::named_tensors() { return modules::named_tensors(*impl_); }

std::vector<at::Tensor> TinyVideo::trainable_parameters() { return modules::trainable_parameters(*impl_); }

void TinyVideo::load(const std::string& path) {
  load_into(named_tensors(), path, "a trainer for tiny_video (none is bundled yet)");
}

void TinyVideo::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, named_tensors(), std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

int64_t TinyVideo::num_parameters() { return modules::num_parameters(*impl_); }

}  // namespace cachelab
