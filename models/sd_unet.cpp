#include "models/sd_unet.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <regex>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr int kGroups = 32;              // GroupNorm groups everywhere in the U-Net
constexpr double kResNormEps = 1e-5;     // GroupNorm32 (residual blocks, out)
constexpr double kXfNormEps = 1e-6;      // the spatial transformer's GroupNorm
constexpr double kLayerNormEps = 1e-5;   // the transformer blocks' LayerNorms
constexpr char kCompVisPrefix[] = "model.diffusion_model.";
// Attention runs over query chunks so that one call's score matrix [B, H, Nq, Nk] stays under
// this many elements (1 GiB in float32): at 64x64 latents a guided batch of 8 would otherwise
// hold 8.6 GB of scores per self-attention. Softmax is per query row, so chunks change nothing.
constexpr int64_t kMaxScores = int64_t(1) << 28;

double conv_flops(double k, double in, double out, double pixels) { return 2 * k * k * in * out * pixels; }

std::string str(int i) { return std::to_string(i); }

// GroupNorm32 of the reference: computed in float32, returned in the input's dtype.
at::Tensor gn32(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b) {
  return at::group_norm(x.to(at::kFloat), kGroups, w.to(at::kFloat), b.to(at::kFloat), kResNormEps).to(x.scalar_type());
}

at::Tensor conv(const at::Tensor& x, const at::Tensor& w, const at::Tensor& b, int stride = 1) {
  const int64_t pad = w.size(2) / 2;
  return at::conv2d(x, w, b, {stride, stride}, {pad, pad});
}

// A diffusers resnet leaf -> the CompVis one ("" when unknown).
std::string res_leaf(const std::string& leaf) {
  static const std::vector<std::pair<std::string, std::string>> map = {
      {"norm1.", "in_layers.0."}, {"conv1.", "in_layers.2."},  {"time_emb_proj.", "emb_layers.1."},
      {"norm2.", "out_layers.0."}, {"conv2.", "out_layers.3."}, {"conv_shortcut.", "skip_connection."}};
  for (auto& [from, to] : map)
    if (leaf.rfind(from, 0) == 0) return to + leaf.substr(from.size());
  return "";
}

}  // namespace

void SdUnet::add_tensor(const std::string& name, std::vector<int64_t> shape) {
  index_[name] = tensors_.size();
  tensors_.emplace_back(name, at::empty(shape, at::kFloat));
}

const at::Tensor& SdUnet::w(const std::string& name) const {
  auto it = index_.find(name);
  CL_CHECK(it != index_.end(), "sd_unet: internal error, no tensor `" << name << "`");
  return tensors_[it->second].second;
}

SdUnet::SdUnet(const SdUnetOptions& o) : options_(o) {
  const int L = int(o.channel_mult.size());
  CL_CHECK(L >= 1 && o.input_size % (1 << (L - 1)) == 0,
           "sd_unet: input_size " << o.input_size << " is not divisible by 2^(levels-1) = " << (1 << (L - 1)));
  CL_CHECK(o.model_channels >= kGroups && o.model_channels % kGroups == 0,
           "sd_unet: model_channels " << o.model_channels << " is not a positive multiple of 32 (GroupNorm(32))");
  CL_CHECK(o.num_res_blocks >= 1 && o.transformer_depth >= 1, "sd_unet: num_res_blocks and transformer_depth must be >= 1");
  const int64_t mc = o.model_channels, E = 4 * mc, Dc = o.context_dim, Lc = o.context_length;
  auto has_attn = [&](int ds) {
    return std::find(o.attention_resolutions.begin(), o.attention_resolutions.end(), ds) != o.attention_resolutions.end();
  };
  for (int l = 0; l < L; ++l) down_level_.push_back(has_attn(1 << l));

  // Tensors, in the reference's module order, and the linear table.
  add_tensor("time_embed.0.weight", {E, mc});
  add_tensor("time_embed.0.bias", {E});
  add_tensor("time_embed.2.weight", {E, E});
  add_tensor("time_embed.2.bias", {E});
  auto add_linear = [&](const std::string& name, bool bias, LinearRole role) {
    linears_.push_back({name, w(name + ".weight"), bias ? w(name + ".bias") : at::Tensor(), -1, role});
    return int(linears_.size()) - 1;
  };
  t0_ = add_linear("time_embed.0", true, LinearRole::TimeEmbed);
  t2_ = add_linear("time_embed.2", true, LinearRole::TimeEmbed);
  auto conv_t = [&](const std::string& p, int64_t in, int64_t out, int64_t k) {
    add_tensor(p + ".weight", {out, in, k, k});
    add_tensor(p + ".bias", {out});
  };
  auto norm_t = [&](const std::string& p, int64_t ch) {
    add_tensor(p + ".weight", {ch});
    add_tensor(p + ".bias", {ch});
  };
  auto lin_t = [&](const std::string& p, int64_t in, int64_t out, bool bias, LinearRole role) {
    add_tensor(p + ".weight", {out, in});
    if (bias) add_tensor(p + ".bias", {out});
    return add_linear(p, bias, role);
  };
  auto make_res = [&](const std::string& p, int64_t in, int64_t out) {
    Res r;
    r.prefix = p;
    norm_t(p + ".in_layers.0", in);
    conv_t(p + ".in_layers.2", in, out, 3);
    r.emb = lin_t(p + ".emb_layers.1", E, out, true, LinearRole::Modulation);
    norm_t(p + ".out_layers.0", out);
    conv_t(p + ".out_layers.3", out, out, 3);
    r.skip = in != out;
    if (r.skip) conv_t(p + ".skip_connection", in, out, 1);
    return r;
  };
  int attn_layer = 0;
  auto make_xf = [&](const std::string& p, int64_t ch) {
    Xf a;
    a.prefix = p;
    int64_t dh;
    if (o.num_head_channels > 0) {
      CL_CHECK(ch % o.num_head_channels == 0, "sd_unet: width " << ch << " is not a multiple of num_head_channels "
                                                                << o.num_head_channels);
      a.heads = int(ch / o.num_head_channels);
      dh = o.num_head_channels;
    } else {
      CL_CHECK(o.num_heads >= 1 && ch % o.num_heads == 0, "sd_unet: width " << ch << " is not a multiple of num_heads "
                                                                           << o.num_heads);
      a.heads = o.num_heads;
      dh = ch / o.num_heads;
    }
    const int64_t D = a.heads * dh;
    norm_t(p + ".norm", ch);
    conv_t(p + ".proj_in", ch, D, 1);
    a.attn_layer = attn_layer;
    for (int k = 0; k < o.transformer_depth; ++k) {
      const std::string b = p + ".transformer_blocks." + str(k);
      XfBlock x;
      x.q1 = lin_t(b + ".attn1.to_q", D, D, false, LinearRole::Qkv);
      x.k1 = lin_t(b + ".attn1.to_k", D, D, false, LinearRole::Qkv);
      x.v1 = lin_t(b + ".attn1.to_v", D, D, false, LinearRole::Qkv);
      x.o1 = lin_t(b + ".attn1.to_out.0", D, D, true, LinearRole::Proj);
      x.ff_in = lin_t(b + ".ff.net.0.proj", D, 8 * D, true, LinearRole::Fc1);
      x.ff_out = lin_t(b + ".ff.net.2", 4 * D, D, true, LinearRole::Fc2);
      x.q2 = lin_t(b + ".attn2.to_q", D, D, false, LinearRole::CrossQ);
      x.k2 = lin_t(b + ".attn2.to_k", Dc, D, false, LinearRole::CrossKv);
      x.v2 = lin_t(b + ".attn2.to_v", Dc, D, false, LinearRole::CrossKv);
      x.o2 = lin_t(b + ".attn2.to_out.0", D, D, true, LinearRole::CrossProj);
      for (int n = 1; n <= 3; ++n) norm_t(b + ".norm" + str(n), D);
      a.blocks.push_back(x);
      attn_layer += 2;
    }
    conv_t(p + ".proj_out", D, ch, 1);
    return a;
  };

  // input_blocks, with the reference's channel bookkeeping.
  std::vector<int64_t> skip_ch = {mc};
  {
    Layer l0;
    l0.prefix = "input_blocks.0";
    conv_t("input_blocks.0.0", o.in_channels, mc, 3);
    input_.push_back(l0);
  }
  int64_t ch = mc;
  for (int lvl = 0; lvl < L; ++lvl) {
    for (int i = 0; i < o.num_res_blocks; ++i) {
      Layer l;
      l.prefix = "input_blocks." + str(int(input_.size()));
      const int64_t out = mc * o.channel_mult[size_t(lvl)];
      l.res.push_back(make_res(l.prefix + ".0", ch, out));
      ch = out;
      if (down_level_[size_t(lvl)]) l.xf.push_back(make_xf(l.prefix + ".1", ch));
      input_.push_back(l);
      skip_ch.push_back(ch);
    }
    if (lvl + 1 < L) {
      Layer l;
      l.prefix = "input_blocks." + str(int(input_.size()));
      l.down = true;
      conv_t(l.prefix + ".0.op", ch, ch, 3);
      input_.push_back(l);
      skip_ch.push_back(ch);
    }
  }
  middle_.prefix = "middle_block";
  middle_.res.push_back(make_res("middle_block.0", ch, ch));
  middle_.xf.push_back(make_xf("middle_block.1", ch));
  middle_.res.push_back(make_res("middle_block.2", ch, ch));
  for (int lvl = L - 1; lvl >= 0; --lvl) {
    for (int i = 0; i <= o.num_res_blocks; ++i) {
      Layer l;
      l.prefix = "output_blocks." + str(int(output_.size()));
      const int64_t ich = skip_ch.back(), out = mc * o.channel_mult[size_t(lvl)];
      skip_ch.pop_back();
      l.res.push_back(make_res(l.prefix + ".0", ch + ich, out));
      ch = out;
      if (down_level_[size_t(lvl)]) l.xf.push_back(make_xf(l.prefix + ".1", ch));
      if (lvl > 0 && i == o.num_res_blocks) {
        l.up = true;
        l.up_conv = l.prefix + "." + str(l.xf.empty() ? 1 : 2) + ".conv";
        conv_t(l.up_conv, ch, ch, 3);
      }
      output_.push_back(l);
    }
  }
  norm_t("out.0", ch);
  conv_t("out.2", mc, o.out_channels, 3);

  // Random initialisation: weights N(0, 1/fan_in), norm scales 1, biases 0.
  {
    c10::NoGradGuard guard;
    auto gen = at::detail::createCPUGenerator(uint64_t(o.init_seed));
    for (auto& [name, t] : tensors_) {
      if (t.dim() >= 2) {
        t.normal_(0.0, 1.0 / std::sqrt(double(t[0].numel())), gen);
      } else if (name.size() > 7 && name.compare(name.size() - 7, 7, ".weight") == 0) {
        t.fill_(1.0);
      } else {
        t.zero_();
      }
    }
  }
  if (!o.weights.empty()) load(resolve_path(o.weights));
  if (!o.null_context.empty() && o.null_context != "zeros") {
    const std::string path = resolve_path(o.null_context);
    auto f = read_safetensors(path);
    for (auto& [name, t] : f.tensors)
      if (name == "context") null_context_ = t.to(at::kFloat);
    CL_CHECK(null_context_.defined(), "sd_unet: `" << path << "` (backbone.null_context) holds no tensor `context`");
    if (null_context_.dim() == 2) null_context_ = null_context_.unsqueeze(0);
    CL_CHECK(null_context_.dim() == 3 && null_context_.size(0) == 1 && null_context_.size(2) == Dc,
             "sd_unet: `context` in `" << path << "` has shape " << shape_str(null_context_.sizes()) << ", expected [L, "
                                       << Dc << "] or [1, L, " << Dc << "]");
  }

  // Site table (forward order), own FLOPs per sample excluding child sites.
  const int N = int(input_.size());
  auto side = [&](int lvl) { return double(o.input_size >> lvl); };
  auto level_of_input = [&](int n) {  // resolution level of input_blocks.n's output
    int lvl = 0;
    for (int k = 1; k <= n; ++k) lvl += input_[size_t(k)].down ? 1 : 0;
    return lvl;
  };
  auto res_flops = [&](const std::string& p, double px) {
    const auto& w1 = w(p + ".in_layers.2.weight");
    const double in = double(w1.size(1)), out = double(w1.size(0));
    return conv_flops(3, in, out, px) + conv_flops(3, out, out, px) + 2.0 * E * out +
           (in != out ? conv_flops(1, in, out, px) : 0.0);
  };
  auto xf_flops = [&](const Xf& a, double px) {
    const double C = double(w(a.prefix + ".proj_in.weight").size(1)), D = double(w(a.prefix + ".proj_in.weight").size(0));
    double f = 4 * px * C * D;
    for (size_t k = 0; k < a.blocks.size(); ++k)
      f += 8 * px * D * D + 4 * px * px * D                             // self-attention
           + 4 * px * D * D + 4 * double(Lc) * Dc * D + 4 * px * Lc * D  // cross-attention
           + 2 * px * D * 8 * D + 2 * px * 4 * D * D;                    // GEGLU feed-forward
    return f;
  };
  int block = 0;
  auto add_layer_sites = [&](Layer& l, int parent, int lvl) {
    const double px = side(lvl) * side(lvl);
    double own = 0;
    for (auto& r : l.res) own += res_flops(r.prefix, px);
    if (l.up) {
      const double c = double(w(l.up_conv + ".weight").size(0));
      own += conv_flops(3, c, c, 4 * px);
    }
    l.site = int(sites_.size());
    sites_.push_back({l.prefix, parent, own, SiteKind::Block, block});
    for (auto& a : l.xf) {
      a.site = int(sites_.size());
      sites_.push_back({a.prefix, l.site, xf_flops(a, px), SiteKind::Attn, block});
    }
    for (auto& r : l.res) linears_[size_t(r.emb)].block = block;
    for (auto& a : l.xf)
      for (auto& x : a.blocks)
        for (int id : {x.q1, x.k1, x.v1, x.o1, x.q2, x.k2, x.v2, x.o2, x.ff_in, x.ff_out}) linears_[size_t(id)].block = block;
    ++block;
  };
  const double px0 = side(0) * side(0);
  sites_.push_back({"model", -1,
                    2.0 * (mc * E + E * E) + conv_flops(3, o.in_channels, mc, px0) + conv_flops(3, mc, o.out_channels, px0),
                    SiteKind::Model});
  branch_site_.assign(size_t(N - 1), -1);
  std::function<void(int, int)> build = [&](int n, int parent) {
    const int b = int(sites_.size());
    branch_site_[size_t(n)] = b;
    Layer& next = input_[size_t(n + 1)];
    double own = 0;
    if (next.down) {
      const double c = double(w(next.prefix + ".0.op.weight").size(0)), s = side(level_of_input(n + 1));
      own = conv_flops(3, c, c, s * s);
    }
    sites_.push_back({"branches." + str(n), parent, own, SiteKind::Branch, n});
    if (!next.down) add_layer_sites(next, b, level_of_input(n + 1));
    if (n + 1 < N - 1) {
      build(n + 1, b);
    } else {
      add_layer_sites(middle_, b, level_of_input(N - 1));
    }
    add_layer_sites(output_[size_t(N - 2 - n)], b, level_of_input(n + 1));  // runs at hs[n+1]'s size
  };
  build(0, kSiteModel);
  add_layer_sites(output_[size_t(N - 1)], kSiteModel, 0);
}

SdUnet::~SdUnet() = default;

std::vector<int64_t> SdUnet::sample_shape() const {
  return {options_.in_channels, options_.input_size, options_.input_size};
}

std::map<std::string, std::vector<int64_t>> SdUnet::expected_shapes() const {
  std::map<std::string, std::vector<int64_t>> out;
  for (auto& [name, t] : tensors_) out[name] = t.sizes().vec();
  return out;
}

at::Tensor SdUnet::res_block(const Res& r, const at::Tensor& x, const at::Tensor& emb_act, Hooks& hooks) const {
  const std::string& p = r.prefix;
  auto h = conv(at::silu(gn32(x, w(p + ".in_layers.0.weight"), w(p + ".in_layers.0.bias"))), w(p + ".in_layers.2.weight"),
                w(p + ".in_layers.2.bias"));
  h = h + hooks.ops().linear(r.emb, emb_act).to(h.scalar_type()).unsqueeze(-1).unsqueeze(-1);
  h = conv(at::silu(gn32(h, w(p + ".out_layers.0.weight"), w(p + ".out_layers.0.bias"))), w(p + ".out_layers.3.weight"),
           w(p + ".out_layers.3.bias"));
  auto skip = r.skip ? conv(x, w(p + ".skip_connection.weight"), w(p + ".skip_connection.bias")) : x;
  return skip + h;
}

at::Tensor SdUnet::transformer(const Xf& a, const at::Tensor& x, const at::Tensor& ctx, Hooks& hooks) const {
  Ops& ops = hooks.ops();
  const std::string& p = a.prefix;
  const int64_t B = x.size(0), H = x.size(2), W = x.size(3);
  auto h = at::group_norm(x, kGroups, w(p + ".norm.weight"), w(p + ".norm.bias"), kXfNormEps);
  h = conv(h, w(p + ".proj_in.weight"), w(p + ".proj_in.bias"));
  const int64_t D = h.size(1), heads = a.heads, dh = D / heads;
  auto tok = h.flatten(2).transpose(1, 2);  // [B, N, D]
  auto split = [&](const at::Tensor& t) { return t.reshape({B, t.size(1), heads, dh}).transpose(1, 2); };
  auto ln = [&](const at::Tensor& t, const std::string& n) {
    return at::layer_norm(t, {D}, w(n + ".weight"), w(n + ".bias"), kLayerNormEps);
  };
  int layer = a.attn_layer;
  for (size_t k = 0; k < a.blocks.size(); ++k) {
    const XfBlock& b = a.blocks[k];
    const std::string bp = p + ".transformer_blocks." + str(int(k));
    auto attend = [&](const at::Tensor& q_in, const at::Tensor& kv_in, int q, int kk, int v, int o) {
      AttnCall call;
      call.layer = layer++;
      auto qh = split(ops.linear(q, q_in)), kh = split(ops.linear(kk, kv_in)), vh = split(ops.linear(v, kv_in));
      const int64_t Nq = qh.size(2), per = std::max<int64_t>(1, kMaxScores / (B * heads * kh.size(2)));
      at::Tensor out;
      if (per >= Nq) {
        out = ops.attention(call, qh, kh, vh);
      } else {
        std::vector<at::Tensor> parts;
        for (int64_t s0 = 0; s0 < Nq; s0 += per) parts.push_back(ops.attention(call, qh.narrow(2, s0, std::min(per, Nq - s0)), kh, vh));
        out = at::cat(parts, 2);
      }
      return ops.linear(o, out.transpose(1, 2).reshape({B, q_in.size(1), D}));
    };
    auto n1 = ln(tok, bp + ".norm1");
    tok = attend(n1, n1, b.q1, b.k1, b.v1, b.o1) + tok;
    tok = attend(ln(tok, bp + ".norm2"), ctx, b.q2, b.k2, b.v2, b.o2) + tok;
    auto gg = ops.linear(b.ff_in, ln(tok, bp + ".norm3")).chunk(2, -1);
    tok = ops.linear(b.ff_out, gg[0] * at::gelu(gg[1])) + tok;
  }
  h = tok.transpose(1, 2).reshape({B, D, H, W});
  return conv(h, w(p + ".proj_out.weight"), w(p + ".proj_out.bias"));
}

at::Tensor SdUnet::layer(const Layer& l, const at::Tensor& h, const at::Tensor& emb_act, const at::Tensor& ctx,
                         Hooks& hooks) const {
  if (l.down) return conv(h, w(l.prefix + ".0.op.weight"), w(l.prefix + ".0.op.bias"), 2);
  return hooks.at(l.site, h, [&](const at::Tensor& x) {
    auto y = res_block(l.res[0], x, emb_act, hooks);
    for (auto& a : l.xf) y = y + hooks.at(a.site, y, [&](const at::Tensor& u) { return transformer(a, u, ctx, hooks); });
    if (l.res.size() > 1) y = res_block(l.res[1], y, emb_act, hooks);
    if (l.up) {
      y = at::upsample_nearest2d(y, {2 * y.size(2), 2 * y.size(3)});
      y = conv(y, w(l.up_conv + ".weight"), w(l.up_conv + ".bias"));
    }
    return y;
  });
}

at::Tensor SdUnet::branch(int n, const at::Tensor& s, const at::Tensor& emb_act, const at::Tensor& ctx,
                          Hooks& hooks) const {
  const int N = int(input_.size());
  auto hs = layer(input_[size_t(n + 1)], s, emb_act, ctx, hooks);
  at::Tensor deep;
  if (n + 1 < N - 1) {
    deep = hooks.at(branch_site_[size_t(n + 1)], hs,
                    [&](const at::Tensor& x) { return branch(n + 1, x, emb_act, ctx, hooks); });
  } else {
    deep = layer(middle_, hs, emb_act, ctx, hooks);
  }
  return layer(output_[size_t(N - 2 - n)], at::cat({deep, hs}, 1), emb_act, ctx, hooks);
}

at::Tensor SdUnet::null_context(int64_t batch, const at::TensorOptions& opts) const {
  CL_CHECK(!options_.null_context.empty(),
           "sd_unet: no unconditional text context: set backbone.null_context to a safetensors file holding `context` "
           "[77, " << options_.context_dim << "] (the text encoder's output for the empty prompt), or `zeros` for runs "
           "on random weights; or give the condition text embeddings");
  if (!null_context_.defined()) return at::zeros({batch, options_.context_length, options_.context_dim}, opts);
  return null_context_.to(opts).expand({batch, -1, -1}).contiguous();
}

at::Tensor SdUnet::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  Ops& ops = hooks.ops();
  const int64_t B = x.size(0), mc = options_.model_channels;
  CL_CHECK(x.dim() == 4 && x.size(1) == options_.in_channels,
           "sd_unet: expected latents [B, " << options_.in_channels << ", h, w], got " << shape_str(x.sizes()));
  at::Tensor ctx;
  if (cond.embeddings.defined()) {
    ctx = cond.embeddings;
    CL_CHECK(ctx.dim() == 3 && ctx.size(0) == B && ctx.size(2) == options_.context_dim,
             "sd_unet: expected the text context (condition embeddings) [" << B << ", L, " << options_.context_dim
                                                                           << "], got " << shape_str(ctx.sizes()));
    ctx = ctx.to(x.options());
  } else {
    ctx = null_context(B, x.options());
  }
  return hooks.at(kSiteModel, x, [&](const at::Tensor& xin) {
    // Sinusoidal timestep features [cos(t w), sin(t w)] of width model_channels, in float32.
    const int64_t half = mc / 2;
    auto freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / double(half));
    auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
    auto feat = at::cat({at::cos(args), at::sin(args)}, 1).to(xin.scalar_type());
    auto emb = ops.linear(t2_, at::silu(ops.linear(t0_, feat)));
    auto emb_act = at::silu(emb);
    const int N = int(input_.size());
    auto hs0 = conv(xin, w("input_blocks.0.0.weight"), w("input_blocks.0.0.bias"));
    auto deep = hooks.at(branch_site_[0], hs0, [&](const at::Tensor& s) { return branch(0, s, emb_act, ctx, hooks); });
    auto h = layer(output_[size_t(N - 1)], at::cat({deep, hs0}, 1), emb_act, ctx, hooks);
    return conv(at::silu(gn32(h, w("out.0.weight"), w("out.0.bias"))), w("out.2.weight"), w("out.2.bias"));
  });
}

Cond SdUnet::null_cond(const Cond& cond) const {
  Cond n = cond;
  if (cond.negative_embeddings.defined()) {  // a negative prompt (one row serves the batch)
    const auto& neg = cond.negative_embeddings;
    const int64_t B = cond.embeddings.defined() ? cond.embeddings.size(0) : neg.size(0);
    n.embeddings = neg.size(0) == 1 && B > 1 ? neg.expand({B, -1, -1}).contiguous() : neg;
  } else if (cond.embeddings.defined()) {
    n.embeddings = null_context(cond.embeddings.size(0), cond.embeddings.options());
  }  // else both halves run on the null context (forward without embeddings)
  return n;
}

std::vector<std::pair<std::string, at::Tensor>> SdUnet::named_tensors() { return tensors_; }

std::vector<at::Tensor> SdUnet::trainable_parameters() { return tensors_of(tensors_); }

int64_t SdUnet::num_parameters() { return numel_of(tensors_); }

void SdUnet::to(at::Device device, at::ScalarType dtype) { move_tensors(tensors_, device, dtype); }

void SdUnet::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, tensors_, std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

void SdUnet::load(const std::string& path) {
  auto file = read_safetensors(path);
  const int nrb = options_.num_res_blocks, L = int(options_.channel_mult.size());
  bool compvis_prefixed = false, diffusers = false;
  for (auto& [name, t] : file.tensors) {
    compvis_prefixed |= name.rfind(kCompVisPrefix, 0) == 0;
    diffusers |= name.rfind("down_blocks.", 0) == 0 || name.rfind("time_embedding.", 0) == 0;
  }
  static const std::regex unet_name(R"((time_embed|input_blocks|middle_block|output_blocks|out)\..*)");
  static const std::regex d_res(R"((down|up)_blocks\.(\d+)\.resnets\.(\d+)\.(.*))");
  static const std::regex d_attn(R"((down|up)_blocks\.(\d+)\.attentions\.(\d+)\.(.*))");
  static const std::regex d_down(R"(down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.*))");
  static const std::regex d_up(R"(up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.*))");
  static const std::regex d_mid(R"(mid_block\.(resnets|attentions)\.(\d+)\.(.*))");
  static const std::regex d_top(R"((time_embedding\.linear_1|time_embedding\.linear_2|conv_in|conv_norm_out|conv_out)\.(.*))");
  // A diffusers name -> the CompVis one; "" when it is not a U-Net tensor name.
  auto from_diffusers = [&](const std::string& name) -> std::string {
    std::smatch m;
    if (std::regex_match(name, m, d_top)) {
      static const std::map<std::string, std::string> top = {{"time_embedding.linear_1", "time_embed.0"},
                                                             {"time_embedding.linear_2", "time_embed.2"},
                                                             {"conv_in", "input_blocks.0.0"},
                                                             {"conv_norm_out", "out.0"},
                                                             {"conv_out", "out.2"}};
      return top.at(m[1]) + "." + std::string(m[2]);
    }
    const int per_down = nrb + 1, per_up = nrb + 1;
    if (std::regex_match(name, m, d_res) || std::regex_match(name, m, d_attn)) {
      const bool down = m[1] == "down", res = name.find(".resnets.") != std::string::npos;
      const int i = std::stoi(m[2]), j = std::stoi(m[3]);
      const std::string leaf = res ? res_leaf(m[4]) : std::string(m[4]);
      if (leaf.empty()) return "";
      const std::string blk = down ? "input_blocks." + str(1 + i * per_down + j) : "output_blocks." + str(i * per_up + j);
      return blk + (res ? ".0." : ".1.") + leaf;
    }
    if (std::regex_match(name, m, d_down)) return "input_blocks." + str((std::stoi(m[1]) + 1) * per_down) + ".0.op." + std::string(m[2]);
    if (std::regex_match(name, m, d_up)) {
      const int i = std::stoi(m[1]), lvl = L - 1 - i;
      const bool attn = lvl >= 0 && lvl < L && down_level_[size_t(lvl)];
      return "output_blocks." + str(i * per_up + nrb) + (attn ? ".2" : ".1") + ".conv." + std::string(m[2]);
    }
    if (std::regex_match(name, m, d_mid)) {
      if (m[1] == "attentions") return m[2] == "0" ? "middle_block.1." + std::string(m[3]) : "";
      const std::string leaf = res_leaf(m[3]);
      if (leaf.empty() || (m[2] != "0" && m[2] != "1")) return "";
      return std::string("middle_block.") + (m[2] == "0" ? "0." : "2.") + leaf;
    }
    return "";
  };
  std::map<std::string, at::Tensor> found;
  for (auto& [name, t] : file.tensors) {
    std::string n = name;
    if (compvis_prefixed) {
      if (n.rfind(kCompVisPrefix, 0) != 0) continue;  // VAE, text encoder of a full checkpoint
      n = n.substr(sizeof(kCompVisPrefix) - 1);
    } else if (diffusers) {
      const std::string c = from_diffusers(n);
      if (c.empty()) {
        const bool unet_like = n.rfind("down_blocks.", 0) == 0 || n.rfind("up_blocks.", 0) == 0 ||
                               n.rfind("mid_block.", 0) == 0;
        CL_CHECK(!unet_like, "sd_unet: `" << path << "`: tensor `" << name << "` has no counterpart in the SD U-Net "
                                          << "(a different architecture?)");
        continue;
      }
      n = c;
    }
    if (!std::regex_match(n, unet_name)) continue;
    CL_CHECK(index_.count(n), "sd_unet: `" << path << "`: tensor `" << name << "` is not part of a U-Net with this "
                                           << "configuration (channel_mult, num_res_blocks, attention_resolutions, "
                                              "transformer_depth must match the checkpoint)");
    found[n] = t;
  }
  CL_CHECK(!found.empty(), "sd_unet: `" << path << "` holds no SD U-Net tensors (expected CompVis names such as "
                                        << "model.diffusion_model.input_blocks.0.0.weight or diffusers names such as "
                                           "down_blocks.0.resnets.0.conv1.weight)");
  const char* layout = compvis_prefixed ? "CompVis (model.diffusion_model.)" : diffusers ? "diffusers" : "CompVis";
  c10::NoGradGuard guard;
  for (auto& [name, t] : tensors_) {
    auto it = found.find(name);
    CL_CHECK(it != found.end(), "sd_unet: `" << path << "` (" << layout << " names) lacks tensor `" << name
                                             << "` of shape " << shape_str(t.sizes()));
    at::Tensor src = it->second;
    // diffusers' linear projections of later SD versions hold [C, C] where the conv has [C, C, 1, 1]
    if (src.sizes() != t.sizes() && src.numel() == t.numel() && t.dim() == 4 && src.dim() == 2) src = src.reshape(t.sizes());
    CL_CHECK(src.sizes() == t.sizes(), "sd_unet: `" << path << "`: tensor `" << it->first << "` has shape "
                                                    << shape_str(src.sizes()) << ", the configuration expects "
                                                    << shape_str(t.sizes()));
    t.copy_(src);
  }
}

}  // namespace cachelab
