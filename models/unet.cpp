#include "models/unet.h"

#include "models/torch_modules.h"

#include <cmath>
#include <functional>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr int kFrequencyDim = 128;  // sinusoidal timestep features fed to the time MLP
constexpr double kGroupNormEps = 1e-5;

// [cos(t w), sin(t w)] over kFrequencyDim channels, float32 on t's device.
at::Tensor timestep_features(const at::Tensor& t) {
  const int half = kFrequencyDim / 2;
  auto freqs = at::exp(-std::log(10000.0) * at::arange(half, t.options().dtype(at::kFloat)) / half);
  auto args = t.to(at::kFloat).unsqueeze(1) * freqs.unsqueeze(0);
  return at::cat({at::cos(args), at::sin(args)}, 1);
}

torch::nn::Conv2d conv(int in, int out, int k, int stride = 1) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, k).stride(stride).padding(k / 2));
}
torch::nn::GroupNorm group_norm(int groups, int ch) {
  return torch::nn::GroupNorm(torch::nn::GroupNormOptions(groups, ch).eps(kGroupNormEps));
}
at::Tensor gn(const torch::nn::GroupNorm& n, const at::Tensor& x) {
  return at::group_norm(x, n->options.num_groups(), n->weight, n->bias, kGroupNormEps);
}

// One residual block: x -> skip(x) + conv2(silu(norm2(conv1(silu(norm1(x))) + emb))).
struct ResBlockImpl : torch::nn::Module {
  ResBlockImpl(int in, int out, int emb_dim, int groups) {
    norm1 = register_module("norm1", group_norm(groups, in));
    conv1 = register_module("conv1", conv(in, out, 3));
    emb = register_module("emb", torch::nn::Linear(emb_dim, out));
    norm2 = register_module("norm2", group_norm(groups, out));
    conv2 = register_module("conv2", conv(out, out, 3));
    if (in != out) skip = register_module("skip", conv(in, out, 1));
  }
  torch::nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr}, skip{nullptr};
  torch::nn::Linear emb{nullptr};
};
TORCH_MODULE(ResBlock);

struct MidAttnImpl : torch::nn::Module {
  MidAttnImpl(int ch, int groups) {
    norm = register_module("norm", group_norm(groups, ch));
    qkv = register_module("qkv", torch::nn::Linear(ch, 3 * ch));
    proj = register_module("proj", torch::nn::Linear(ch, ch));
  }
  torch::nn::GroupNorm norm{nullptr};
  torch::nn::Linear qkv{nullptr}, proj{nullptr};
};
TORCH_MODULE(MidAttn);

double conv_flops(double k, double in, double out, double pixels) { return 2 * k * k * in * out * pixels; }

}  // namespace

struct Unet::Impl : torch::nn::Module {
  explicit Impl(const UnetOptions& o) {
    const int E = o.emb_dim, L = int(o.channel_mult.size());
    auto width = [&](int l) { return o.channels * o.channel_mult[size_t(l)]; };
    t_embedder = register_module("t_embedder", torch::nn::Sequential(torch::nn::Linear(kFrequencyDim, E),
                                                                     torch::nn::SiLU(), torch::nn::Linear(E, E)));
    y_embedder = register_module("y_embedder",
                                 torch::nn::Embedding(o.num_classes + (o.class_dropout_prob > 0 ? 1 : 0), E));
    conv_in = register_module("conv_in", conv(o.in_channels, width(0), 3));
    down = register_module("down", torch::nn::ModuleList());
    up = register_module("up", torch::nn::ModuleList());
    downsample = register_module("downsample", torch::nn::ModuleList());
    for (int l = 0; l < L; ++l) {
      torch::nn::ModuleList d, u;
      for (int i = 0; i < o.res_blocks; ++i) d->push_back(ResBlock(i == 0 && l > 0 ? width(l - 1) : width(l), width(l), E, o.groups));
      const int deep = l + 1 < L ? width(l + 1) : width(l);
      for (int i = 0; i < o.res_blocks; ++i) u->push_back(ResBlock(i == 0 ? deep + width(l) : width(l), width(l), E, o.groups));
      down->push_back(d);
      up->push_back(u);
      if (l + 1 < L) downsample->push_back(conv(width(l), width(l), 3, 2));
    }
    mid = register_module("mid", torch::nn::ModuleList());
    mid->push_back(ResBlock(width(L - 1), width(L - 1), E, o.groups));
    mid->push_back(ResBlock(width(L - 1), width(L - 1), E, o.groups));
    if (o.attention_heads > 0) mid_attn = register_module("mid_attn", MidAttn(width(L - 1), o.groups));
    norm_out = register_module("norm_out", group_norm(o.groups, width(0)));
    conv_out = register_module("conv_out", conv(width(0), o.in_channels, 3));
  }

  // Default torch init, then (as DDPM) the last layer of every residual branch and of the
  // output zeroed: a fresh U-Net is the identity on its features and predicts 0.
  void initialize(int64_t seed) {
    torch::NoGradGuard guard;
    torch::manual_seed(seed);
    for (auto& mod : modules(/*include_self=*/false)) {
      if (auto* c = mod->as<torch::nn::Conv2d>()) c->reset_parameters();
      if (auto* l = mod->as<torch::nn::Linear>()) l->reset_parameters();
    }
    torch::nn::init::normal_(y_embedder->weight, 0.0, 0.02);
    auto zero = [](const at::Tensor& t) { torch::nn::init::zeros_(t); };
    for (auto* list : {&down, &up})
      for (auto& lvl : **list)
        for (auto& b : *lvl->as<torch::nn::ModuleList>()) zero(b->as<ResBlockImpl>()->conv2->weight), zero(b->as<ResBlockImpl>()->conv2->bias);
    for (auto& b : *mid) zero(b->as<ResBlockImpl>()->conv2->weight), zero(b->as<ResBlockImpl>()->conv2->bias);
    if (mid_attn) zero(mid_attn->proj->weight), zero(mid_attn->proj->bias);
    zero(conv_out->weight), zero(conv_out->bias);
  }

  ResBlockImpl& res(const std::string& path, int level, int i) {
    if (path == "mid") return *mid[size_t(i)]->as<ResBlockImpl>();
    auto& list = path == "down" ? down : up;
    return *list[size_t(level)]->as<torch::nn::ModuleList>()->ptr(size_t(i))->as<ResBlockImpl>();
  }

  torch::nn::Sequential t_embedder{nullptr};
  torch::nn::Embedding y_embedder{nullptr};
  torch::nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  torch::nn::GroupNorm norm_out{nullptr};
  torch::nn::ModuleList down{nullptr}, up{nullptr}, downsample{nullptr}, mid{nullptr};
  MidAttn mid_attn{nullptr};
  std::vector<ResBlockImpl*> blocks;  // in forward order (ResIds::module)
};

Unet::Unet(const UnetOptions& o) : options_(o) {
  const int L = int(o.channel_mult.size());
  CL_CHECK(L >= 1 && o.input_size % (1 << (L - 1)) == 0,
           "unet: input_size " << o.input_size << " is not divisible by 2^(levels-1) = " << (1 << (L - 1)));
  for (int m : o.channel_mult)
    CL_CHECK(m >= 1 && o.groups >= 1 && (o.channels * m) % o.groups == 0,
             "unet: width " << o.channels * m << " is not divisible by groups " << o.groups);
  CL_CHECK(o.attention_heads == 0 || (o.channels * o.channel_mult.back()) % o.attention_heads == 0,
           "unet: attention_heads must divide the deepest width");
  CL_CHECK(o.res_blocks >= 1, "unet: res_blocks must be >= 1");
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize(o.init_seed);
  if (!o.weights.empty()) load(resolve_path(o.weights));

  // Site table (forward order) with analytic FLOPs per sample, children excluded, and the
  // linear table. The recursion mirrors Unet::level.
  Impl& m = *impl_;
  const double E = o.emb_dim, C = o.in_channels;
  auto width = [&](int l) { return double(o.channels * o.channel_mult[size_t(l)]); };
  auto pixels = [&](int l) { return std::pow(double(o.input_size >> l), 2); };
  auto add_linear = [&](const std::string& name, torch::nn::LinearImpl* lin, int block, LinearRole role) {
    linears_.push_back({name, lin->weight, lin->bias, block, role});
    return int(linears_.size()) - 1;
  };
  sites_.push_back({"model", -1,
                    2 * (kFrequencyDim * E + E * E) + conv_flops(3, C, width(0), pixels(0)) +
                        conv_flops(3, width(0), C, pixels(0)),
                    SiteKind::Model});
  t0_ = add_linear("t_embedder.0", m.t_embedder[0]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  t2_ = add_linear("t_embedder.2", m.t_embedder[2]->as<torch::nn::Linear>(), -1, LinearRole::TimeEmbed);
  int block_index = 0;
  auto add_res = [&](const std::string& path, int l, int i, int parent, double px) {
    ResBlockImpl& r = m.res(path, l, i);
    const std::string name = path == "mid" ? "mid." + std::to_string(i) : path + "." + std::to_string(l) + "." + std::to_string(i);
    const double in = double(r.conv1->options.in_channels()), out = double(r.conv1->options.out_channels());
    const double flops = conv_flops(3, in, out, px) + conv_flops(3, out, out, px) + 2 * E * out +
                         (r.skip ? conv_flops(1, in, out, px) : 0.0);
    ResIds ids;
    ids.site = int(sites_.size());
    sites_.push_back({name, parent, flops, SiteKind::Block, block_index});
    ids.emb = add_linear(name + ".emb", r.emb.get(), block_index, LinearRole::Modulation);
    ids.module = int(m.blocks.size());
    m.blocks.push_back(&r);
    ++block_index;
    return ids;
  };
  down_.resize(size_t(L));
  up_.resize(size_t(L));
  branch_site_.assign(size_t(std::max(L - 1, 0)), -1);
  std::function<void(int, int)> build = [&](int l, int parent) {
    for (int i = 0; i < o.res_blocks; ++i) down_[size_t(l)].push_back(add_res("down", l, i, parent, pixels(l)));
    if (l + 1 < L) {
      const int b = int(sites_.size());
      branch_site_[size_t(l)] = b;
      sites_.push_back({"branches." + std::to_string(l), parent, conv_flops(3, width(l), width(l), pixels(l + 1)),
                        SiteKind::Branch, l});
      build(l + 1, b);
    } else {
      mid_.push_back(add_res("mid", l, 0, parent, pixels(l)));
      if (m.mid_attn) {
        const double N = pixels(l), D = width(l);
        mid_attn_site_ = int(sites_.size());
        sites_.push_back({"mid.attn", parent, 2 * N * D * 3 * D + 4 * N * N * D + 2 * N * D * D, SiteKind::Attn,
                          sites_[size_t(mid_.back().site)].block});
        qkv_ = add_linear("mid_attn.qkv", m.mid_attn->qkv.get(), sites_.back().block, LinearRole::Qkv);
        proj_ = add_linear("mid_attn.proj", m.mid_attn->proj.get(), sites_.back().block, LinearRole::Proj);
      }
      mid_.push_back(add_res("mid", l, 1, parent, pixels(l)));
    }
    for (int i = 0; i < o.res_blocks; ++i) up_[size_t(l)].push_back(add_res("up", l, i, parent, pixels(l)));
  };
  build(0, kSiteModel);
}

Unet::~Unet() = default;

std::vector<int64_t> Unet::sample_shape() const {
  return {options_.in_channels, options_.input_size, options_.input_size};
}

at::Tensor Unet::res_block(const ResIds& r, const at::Tensor& h, const at::Tensor& emb_act, Hooks& hooks) {
  ResBlockImpl& b = *impl_->blocks[size_t(r.module)];
  Ops& ops = hooks.ops();
  return hooks.at(r.site, h, [&](const at::Tensor& x) {
    auto y = b.conv1(at::silu(gn(b.norm1, x)));
    y = y + ops.linear(r.emb, emb_act).unsqueeze(-1).unsqueeze(-1);
    y = b.conv2(at::silu(gn(b.norm2, y)));
    return (b.skip ? b.skip(x) : x) + y;
  });
}

at::Tensor Unet::level(int l, const at::Tensor& h_in, const at::Tensor& emb_act, Hooks& hooks) {
  Impl& m = *impl_;
  auto h = h_in;
  for (auto& r : down_[size_t(l)]) h = res_block(r, h, emb_act, hooks);
  at::Tensor deep;
  if (l + 1 < levels()) {
    deep = hooks.at(branch_site_[size_t(l)], h, [&](const at::Tensor& skip) {
      auto d = m.downsample[size_t(l)]->as<torch::nn::Conv2d>()->forward(skip);
      d = level(l + 1, d, emb_act, hooks);
      return at::upsample_nearest2d(d, {skip.size(2), skip.size(3)});
    });
  } else {
    deep = res_block(mid_[0], h, emb_act, hooks);
    if (m.mid_attn) {
      Ops& ops = hooks.ops();
      const int heads = options_.attention_heads;
      auto a = hooks.at(mid_attn_site_, deep, [&](const at::Tensor& x) {
        const int64_t B = x.size(0), D = x.size(1), H = x.size(2), W = x.size(3), N = H * W, hd = D / heads;
        auto tokens = gn(m.mid_attn->norm, x).flatten(2).transpose(1, 2);  // [B, N, D]
        auto qkv = ops.linear(qkv_, tokens).reshape({B, N, 3, heads, hd}).permute({2, 0, 3, 1, 4});
        AttnCall ac;
        ac.layer = sites_[size_t(mid_attn_site_)].block;
        auto o = ops.attention(ac, qkv[0], qkv[1], qkv[2]).transpose(1, 2).reshape({B, N, D});
        return ops.linear(proj_, o).transpose(1, 2).reshape({B, D, H, W});
      });
      deep = deep + a;
    }
    deep = res_block(mid_[1], deep, emb_act, hooks);
  }
  h = at::cat({deep, h}, 1);
  for (auto& r : up_[size_t(l)]) h = res_block(r, h, emb_act, hooks);
  return h;
}

at::Tensor Unet::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  Impl& m = *impl_;
  Ops& ops = hooks.ops();
  CL_CHECK(cond.labels.defined(), "unet: the condition needs class labels");
  return hooks.at(kSiteModel, x, [&](const at::Tensor& xin) {
    auto emb = ops.linear(t2_, at::silu(ops.linear(t0_, timestep_features(t).to(xin.scalar_type())))) +
               m.y_embedder->forward(cond.labels);
    auto emb_act = at::silu(emb);
    auto h = level(0, m.conv_in(xin), emb_act, hooks);
    return m.conv_out(at::silu(gn(m.norm_out, h)));
  });
}

Cond Unet::null_cond(const Cond& cond) const {
  CL_CHECK(options_.class_dropout_prob > 0,
           "unet: classifier-free guidance needs the null label, which this model lacks (backbone.class_dropout_prob "
           "is 0); set run.cfg_scale: 1 or use a model trained with label dropout");
  Cond n = cond;
  n.labels = at::full_like(cond.labels, options_.num_classes);
  return n;
}

void Unet::to(at::Device device, at::ScalarType dtype) { impl_->to(device, dtype); }

std::vector<std::pair<std::string, at::Tensor>> Unet::named_tensors() { return modules::named_tensors(*impl_); }

std::vector<at::Tensor> Unet::trainable_parameters() { return modules::trainable_parameters(*impl_); }

void Unet::load(const std::string& path) {
  load_into(named_tensors(), path, "cachelab train configs/train/unet-mnist.yaml");
}

void Unet::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, named_tensors(), std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

int64_t Unet::num_parameters() { return modules::num_parameters(*impl_); }

}  // namespace cachelab
