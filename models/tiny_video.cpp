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

// Rotary embedding of frame indices: x [B, H, N, d], positions [N] int64 (d even).
at::Tensor rotate(const at::Tensor& x, const at::Tensor& positions, double theta) {
  const int64_t d = x.size(-1), half = d / 2;
  auto inv_freq = at::pow(theta, -at::arange(0, half, at::kFloat) * (2.0 / double(d)));
  auto angles = positions.to(at::kFloat).unsqueeze(1) * inv_freq.unsqueeze(0);  // [N, d/2]
  auto cos = at::cat({at::cos(angles), at::cos(angles)}, 1).to(x.options());
  auto sin = at::cat({at::sin(angles), at::sin(angles)}, 1).to(x.options());
  auto rotated = at::cat({-x.narrow(-1, half, half), x.narrow(-1, 0, half)}, -1);
  return x * cos + rotated * sin;
}

// Token frame indices of frames [first, end): each frame's index repeated P times.
at::Tensor frame_positions(int64_t first, int64_t end, int64_t P) {
  return at::arange(first, end, at::kLong).repeat_interleave(P);
}

// Rotary embedding of the tokens of frames [first, end) (g x g patches each, row-major):
// `rope` rotates the whole head by the frame index; `rope3d` splits the head width d into a
// frame part (d - 4 floor(d / 6)) and a row and a column part (2 floor(d / 6) each), as Wan's
// 3D RoPE (Self Forcing's backbone) does.
at::Tensor rotary(const at::Tensor& x, int64_t first, int64_t end, int64_t g, const TinyVideoOptions& o) {
  const int64_t P = g * g;
  const auto t = frame_positions(first, end, P);
  if (o.frame_position == "rope") return rotate(x, t, o.rope_theta);
  const int64_t d = x.size(-1), s = 2 * (d / 6), dt = d - 2 * s;
  const auto patch = at::arange(P, at::kLong).repeat({end - first});
  return at::cat({rotate(x.narrow(-1, 0, dt), t, o.rope_theta),
                  rotate(x.narrow(-1, dt, s), patch.div(g, "floor"), o.rope_theta),
                  rotate(x.narrow(-1, dt + s, s), patch.remainder(g), o.rope_theta)},
                 -1);
}


}  // namespace

struct TinyVideo::Impl : torch::nn::Module {
  explicit Impl(const TinyVideoOptions& o) {
    const int D = o.hidden_size, patch_dim = o.channels * o.patch_size * o.patch_size;
    const int P = (o.frame_size / o.patch_size) * (o.frame_size / o.patch_size);
    patch_embed = register_module("patch_embed", torch::nn::Linear(patch_dim, D));
    pos_embed = register_parameter("pos_embed", torch::zeros({P, D}));
    if (o.frame_position == "table") frame_embed = register_parameter("frame_embed", torch::zeros({o.max_frames, D}));
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
    if (frame_embed.defined()) torch::nn::init::normal_(frame_embed, 0.0, 1.0);
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
  CL_CHECK(o.depth >= 1 && o.max_frames >= 1 && o.channels >= 1 && o.chunk_frames >= 1,
           "tiny_video: depth, max_frames, channels and chunk_frames must be >= 1");
  CL_CHECK(o.frame_position == "table" || o.frame_position == "rope" || o.frame_position == "rope3d",
           "tiny_video: frame_position must be table, rope or rope3d, got `" << o.frame_position << "`");
  CL_CHECK(o.frame_position == "table" || ((o.hidden_size / o.num_heads) % 2 == 0 && o.hidden_size / o.num_heads >= 6),
           "tiny_video: rope needs an even head width (rope3d: >= 6), got " << o.hidden_size / o.num_heads);
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize(o.init_seed);
  if (!o.weights.empty()) load(resolve_path(o.weights));

  const double F = o.max_frames, P = double(tokens_per_frame());
  double attn = 0;
  for (int f = 0; f < o.max_frames; ++f) attn += attn_frame_flops(P * std::min(o.max_frames, (f / o.chunk_frames + 1) * o.chunk_frames));
  sites_.push_back({"model", -1, model_flops(F, F, 1), SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < o.depth; ++i) {
    const std::string b = "layers." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 0.0, SiteKind::Block, i});
    sites_.push_back({b + ".attn", blk, attn, SiteKind::Attn, i});
    sites_.push_back({b + ".mlp", blk, F * mlp_frame_flops(), SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }

  auto add = [&](const std::string& name, torch::nn::LinearImpl* l, int block, LinearRole role) {
    linears_.push_back({name, l->weight, l->bias, block, role});
    return int(linears_.size()) - 1;
  };
  Impl& m = *impl_;
  patch_ = add("patch_embed", m.patch_embed.get(), -1, LinearRole::Embed);
  t0_ = add("t_embedder.mlp.0", m.t_mlp[0]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  t2_ = add("t_embedder.mlp.2", m.t_mlp[2]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  for (int i = 0; i < o.depth; ++i) {
    auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
    const std::string b = "layers." + std::to_string(i);
    LayerIds id;
    id.qkv = add(b + ".attn.qkv", layer.attn->qkv.get(), i, LinearRole::Qkv);
    id.proj = add(b + ".attn.proj", layer.attn->proj.get(), i, LinearRole::Proj);
    id.fc1 = add(b + ".mlp.fc1", layer.mlp->fc1.get(), i, LinearRole::Fc1);
    id.fc2 = add(b + ".mlp.fc2", layer.mlp->fc2.get(), i, LinearRole::Fc2);
    ids_.push_back(id);
  }
  head_ = add("head", m.head.get(), -1, LinearRole::Head);
}

TinyVideo::~TinyVideo() = default;

int64_t TinyVideo::tokens_per_frame() const {
  const int64_t g = options_.frame_size / options_.patch_size;
  return g * g;
}

std::vector<int64_t> TinyVideo::sample_shape() const {
  return {options_.max_frames, options_.channels, options_.frame_size, options_.frame_size};
}

at::Tensor TinyVideo::example_input(int64_t batch, const at::TensorOptions& options) const {
  const int64_t F = std::min<int64_t>(options_.max_frames, 4 * options_.chunk_frames);
  return at::randn({batch, F, options_.channels, options_.frame_size, options_.frame_size}, options);
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
  const int64_t c = options_.chunk_frames;
  const bool rope = options_.frame_position != "table";
  CL_CHECK(x.dim() == 5 && x.size(2) == C && x.size(3) == Hs && x.size(4) == Hs,
           "tiny_video: x must be [B, F, " << C << ", " << Hs << ", " << Hs << "]");
  const int64_t F = x.size(1), ctx = cond.context;
  CL_CHECK(F <= options_.max_frames, "tiny_video: " << F << " frames exceed max_frames " << options_.max_frames);
  CL_CHECK(ctx >= 0 && ctx < F, "tiny_video: context " << ctx << " must be in [0, " << F << ")");
  CL_CHECK(F % c == 0 && ctx % c == 0, "tiny_video: frames (" << F << ") and context (" << ctx
                                                               << ") must be whole chunks of chunk_frames " << c);
  SeqForward sf;
  sf.batch = x.size(0);
  sf.length = F;
  sf.context = ctx;
  sf.block_end = F;
  sf.num_layers = options_.depth;
  sf.step = cond.step;
  sf.kind = SequenceKind::Causal;
  const SeqPlan plan = ops.seq_begin(sf);
  // Frames are computed as one trailing range [S, F), the same for every sample.
  int64_t S = 0;
  if (plan.rows.defined()) {
    S = plan.rows.size(1) > 0 ? plan.rows[0][0].item<int64_t>() : F;
    CL_CHECK(plan.rows.size(1) == F - S && plan.rows.equal(every_row(sf.batch, F).narrow(1, S, F - S)),
             "tiny_video: the ops must ask for one trailing range of frames, the same for every sample");
  }
  CL_CHECK(S <= ctx, "tiny_video: the ops supplies frames up to " << S << ", beyond the context " << ctx);
  CL_CHECK(S % c == 0, "tiny_video: the ops supplies frames up to " << S << ", inside a chunk of " << c << " frames");
  const int64_t R = F - S, O = F - ctx, P = tokens_per_frame(), U = R / c;
  const int64_t D = options_.hidden_size, heads = options_.num_heads, hd = D / heads;
  // The queries of the chunk starting at frame a see frames [first_key(a), a + c).
  auto first_key = [&](int64_t a) { return plan.window >= 0 ? std::max<int64_t>(0, a - plan.window) : int64_t(0); };
  // ... and the sink frames [0, plan.sink) that lie before first_key(a).
  auto sunk_keys = [&](int64_t a) { return std::min(std::max<int64_t>(plan.sink, 0), first_key(a)); };
  // FLOPs of layer i's attention: per chunk, the keys its queries are scored against, as the
  // ops counts them (a cache that prunes keys per head scores fewer).
  auto attn_cost = [&](int i) {
    double cost = 0;
    for (int64_t a = S; a < F; a += c)
      cost += double(c) * attn_frame_flops(ops.attended_keys(i, double(P * (a + c - first_key(a) + sunk_keys(a)))));
    return cost;
  };
  const bool clean = S < ctx;  // clean frames computed: their timestep-0 embedding is needed
  auto lin = [&](int id, const at::Tensor& v) { return ops.linear(id, v); };
  auto chunk_rows = [&](const at::Tensor& h, int64_t j) { return h.narrow(1, j * c * P, c * P); };

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
      auto e = lin(patch_, patches.select(1, j)) + m.pos_embed + (f < ctx ? clean_t : noisy_t).unsqueeze(1);
      frames.push_back(rope ? e : e + m.frame_embed[f]);
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
            for (int64_t j = 0; j < U; ++j) {
              const int64_t a0 = S + j * c, end = a0 + c;
              auto qkv = lin(id.qkv, norm(layer.norm1, chunk_rows(ac.inputs[0], j)))
                             .reshape({B, c * P, 3, heads, hd}).permute({2, 0, 3, 1, 4});
              at::Tensor q = qkv[0], k = qkv[1];
              if (rope) q = rotary(q, a0, end, g, options_), k = rotary(k, a0, end, g, options_);
              ks.push_back(k);
              vs.push_back(qkv[2]);
              // Keys of the frames computed here that this chunk sees; the ops adds earlier ones.
              // Computed sink frames [S, sunk) lie before the window and are seen too.
              const int64_t first = std::max(S, first_key(a0)), sunk = std::max(S, sunk_keys(a0));
              auto K = at::cat(ks, 2), V = at::cat(vs, 2);
              auto seen = [&](const at::Tensor& t) {
                auto w = t.narrow(2, (first - S) * P, (end - first) * P);
                return sunk > S ? at::cat({t.narrow(2, 0, (sunk - S) * P), w}, 2) : w;
              };
              auto kv_pos = frame_positions(first, end, P);
              if (sunk > S) kv_pos = at::cat({frame_positions(S, sunk, P), kv_pos});
              AttnCall call;
              call.layer = i;
              call.q_positions = frame_positions(a0, end, P).unsqueeze(0).expand({B, -1});
              call.kv_positions = kv_pos.unsqueeze(0).expand({B, -1});
              auto o = ops.attention(call, q, seen(K), seen(V));
              outs.push_back(lin(id.proj, o.transpose(1, 2).reshape({B, c * P, D})));
            }
            return {at::cat(outs, 1)};
          }, attn_cost(i))[0];
          auto z1 = zin + a;
          auto f = hooks.at(layer_site(i) + 2, {z1}, [&](const SiteCall& fc) -> Tensors {
            auto mlp = [&](const at::Tensor& u) { return lin(id.fc2, at::gelu(lin(id.fc1, norm(layer.norm2, u)))); };
            if (fc.rows.defined()) return {mlp(fc.inputs[0].index_select(1, fc.rows))};
            std::vector<at::Tensor> outs;
            for (int64_t j = 0; j < U; ++j) outs.push_back(mlp(chunk_rows(fc.inputs[0], j)));
            return {at::cat(outs, 1)};
          }, double(R) * mlp_frame_flops())[0];
          return {z1 + f};
        }, 0.0)[0];
      }
      return {z};
    }, 0.0)[0];
    // Predicted noise of the frames after the context, chunk by chunk.
    std::vector<at::Tensor> outs;
    for (int64_t a0 = ctx; a0 < F; a0 += c)
      outs.push_back(lin(head_, norm(m.norm_f, h.narrow(1, (a0 - S) * P, c * P))));
    auto out = at::cat(outs, 1).reshape({B, O, P, C * p * p});
    return {out.reshape({B, O, g, g, C, p, p}).permute({0, 1, 4, 2, 5, 3, 6}).reshape({B, O, C, Hs, Hs})};
  }, model_flops(double(R), double(O), clean ? 2.0 : 1.0))[0];
}

at::Tensor TinyVideo::teacher_forcing(const at::Tensor& clean, const at::Tensor& noisy, const at::Tensor& t,
                                      int64_t context) {
  Impl& m = *impl_;
  const int64_t C = options_.channels, Hs = options_.frame_size, p = options_.patch_size, g = Hs / p;
  const int64_t c = options_.chunk_frames, P = tokens_per_frame();
  const bool rope = options_.frame_position != "table";
  CL_CHECK(clean.dim() == 5 && clean.sizes() == noisy.sizes() && clean.size(2) == C && clean.size(3) == Hs &&
               clean.size(4) == Hs,
           "tiny_video: teacher forcing needs clean and noisy clips [B, F, " << C << ", " << Hs << ", " << Hs << "]");
  const int64_t B = clean.size(0), F = clean.size(1), U = F / c;
  CL_CHECK(F % c == 0 && context % c == 0 && context >= 0 && context < F && F <= options_.max_frames,
           "tiny_video: teacher forcing needs whole chunks, context in [0, " << F << ") and at most max_frames frames");
  CL_CHECK(t.dim() == 2 && t.size(0) == B && t.size(1) == U, "tiny_video: teacher forcing needs t [B, " << U << "]");
  const int64_t Fc = F - c, O = F - context;  // clean frames that serve as keys; noisy frames predicted
  const int64_t D = options_.hidden_size, heads = options_.num_heads, hd = D / heads;
  auto embed = [&](const at::Tensor& video, int64_t first, int64_t n, const at::Tensor& temb) {  // temb [B, n, D]
    auto patches = video.narrow(1, first, n).reshape({B, n, C, g, p, g, p}).permute({0, 1, 3, 5, 2, 4, 6})
                       .reshape({B, n, P, C * p * p});
    auto e = m.patch_embed->forward(patches) + m.pos_embed + temb.unsqueeze(2);
    if (!rope) e = e + m.frame_embed.narrow(0, first, n).unsqueeze(1);
    return e.reshape({B, n * P, D});
  };
  auto temb = [&](const at::Tensor& tt) { return m.t_mlp->forward(timestep_features(tt.reshape({-1}))); };
  // Noisy frames' timesteps: their chunk's; clean frames' 0.
  auto t_noisy = t.narrow(1, context / c, O / c).repeat_interleave(c, 1);  // [B, O]
  at::Tensor hn = embed(noisy, context, O, temb(t_noisy).reshape({B, O, D}));
  at::Tensor hc;
  if (Fc > 0) hc = embed(clean, 0, Fc, temb(at::zeros({B * Fc}, t.options())).reshape({B, Fc, D}));
  auto heads_of = [&](const at::Tensor& y, int64_t n) { return y.reshape({B, n, 3, heads, hd}).permute({2, 0, 3, 1, 4}); };
  auto attend = [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
    auto w = at::softmax(at::matmul(q, k.transpose(-2, -1)) / std::sqrt(double(hd)), -1);
    return at::matmul(w, v);
  };
  const int64_t n = c * P;  // tokens per chunk
  // Chunk by chunk: clean chunk u sees clean chunks <= u; noisy chunk u sees clean chunks < u
  // and itself.
  auto merge = [&](std::vector<at::Tensor>& outs) { return at::cat(outs, 2).transpose(1, 2).reshape({B, -1, D}); };
  for (int i = 0; i < options_.depth; ++i) {
    auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
    auto qkv_n = heads_of(layer.attn->qkv->forward(norm(layer.norm1, hn)), O * P);
    at::Tensor qn = qkv_n[0], kn = qkv_n[1], vn = qkv_n[2], qc, kc, vc;
    if (rope) qn = rotary(qn, context, F, g, options_), kn = rotary(kn, context, F, g, options_);
    if (Fc > 0) {
      auto qkv_c = heads_of(layer.attn->qkv->forward(norm(layer.norm1, hc)), Fc * P);
      qc = qkv_c[0], kc = qkv_c[1], vc = qkv_c[2];
      if (rope) qc = rotary(qc, 0, Fc, g, options_), kc = rotary(kc, 0, Fc, g, options_);
    }
    std::vector<at::Tensor> on, oc;
    for (int64_t u = context / c; u < U; ++u) {
      const int64_t j = u - context / c, past = u * n;
      auto kk = kn.narrow(2, j * n, n), vv = vn.narrow(2, j * n, n);
      if (past > 0) kk = at::cat({kc.narrow(2, 0, past), kk}, 2), vv = at::cat({vc.narrow(2, 0, past), vv}, 2);
      on.push_back(attend(qn.narrow(2, j * n, n), kk, vv));
    }
    for (int64_t u = 0; u < Fc / c; ++u)
      oc.push_back(attend(qc.narrow(2, u * n, n), kc.narrow(2, 0, (u + 1) * n), vc.narrow(2, 0, (u + 1) * n)));
    if (Fc > 0) {
      hc = hc + layer.attn->proj->forward(merge(oc));
      hc = hc + layer.mlp->fc2->forward(at::gelu(layer.mlp->fc1->forward(norm(layer.norm2, hc))));
    }
    hn = hn + layer.attn->proj->forward(merge(on));
    hn = hn + layer.mlp->fc2->forward(at::gelu(layer.mlp->fc1->forward(norm(layer.norm2, hn))));
  }
  auto out = m.head->forward(norm(m.norm_f, hn)).reshape({B, O, g, g, C, p, p});
  return out.permute({0, 1, 4, 2, 5, 3, 6}).reshape({B, O, C, Hs, Hs});
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
