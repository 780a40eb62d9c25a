#include "models/tiny_mdlm.h"

#include "models/torch_modules.h"

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

constexpr double kLayerNormEps = 1e-5;


at::Tensor norm(const torch::nn::LayerNorm& ln, const at::Tensor& x) {
  return at::layer_norm(x, {x.size(-1)}, ln->weight, ln->bias, kLayerNormEps);
}

}  // namespace

struct TinyMdlm::Impl : torch::nn::Module {
  explicit Impl(const TinyMdlmOptions& o) {
    tok_embed = register_module("tok_embed", torch::nn::Embedding(o.vocab_size + 1, o.hidden_size));
    pos_embed = register_parameter("pos_embed", torch::zeros({o.max_length, o.hidden_size}));
    layers = register_module("layers", torch::nn::ModuleList());
    for (int i = 0; i < o.depth; ++i) layers->push_back(modules::PreLnLayer(o.hidden_size, int(o.hidden_size * o.mlp_ratio), kLayerNormEps));
    norm_f = register_module("norm_f", torch::nn::LayerNorm(torch::nn::LayerNormOptions({o.hidden_size}).eps(kLayerNormEps)));
    head = register_module("head", torch::nn::Linear(o.hidden_size, o.vocab_size));
  }
  // Random weights: LibTorch's default initialisation of the layers (seeded), unit-variance
  // token and position embeddings.
  void initialize(int64_t seed) {
    torch::NoGradGuard guard;
    torch::manual_seed(seed);
    for (auto& m : modules(/*include_self=*/false))
      if (auto* lin = m->as<torch::nn::Linear>()) lin->reset_parameters();
    torch::nn::init::normal_(tok_embed->weight, 0.0, 1.0);
    torch::nn::init::normal_(pos_embed, 0.0, 1.0);
  }
  torch::nn::Embedding tok_embed{nullptr};
  at::Tensor pos_embed;
  torch::nn::ModuleList layers{nullptr};
  torch::nn::LayerNorm norm_f{nullptr};
  torch::nn::Linear head{nullptr};
};

TinyMdlm::TinyMdlm(const TinyMdlmOptions& o) : options_(o) {
  CL_CHECK(o.num_heads > 0 && o.hidden_size % o.num_heads == 0,
           "tiny_mdlm: hidden_size " << o.hidden_size << " is not a multiple of num_heads " << o.num_heads);
  CL_CHECK(o.depth >= 1 && o.vocab_size >= 2 && o.max_length >= 2, "tiny_mdlm: depth, vocab_size or max_length too small");
  impl_ = std::make_unique<Impl>(o);
  impl_->initialize(o.init_seed);
  if (!o.weights.empty()) load(resolve_path(o.weights));

  const double L = o.max_length;
  sites_.push_back({"model", -1, model_flops(L), SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < o.depth; ++i) {
    const std::string b = "layers." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 0.0, SiteKind::Block, i});
    sites_.push_back({b + ".attn", blk, attn_flops(L, L), SiteKind::Attn, i});
    sites_.push_back({b + ".mlp", blk, mlp_flops(L), SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }

  auto add = [&](const std::string& name, torch::nn::LinearImpl* l, int block, LinearRole role) {
    linears_.push_back({name, l->weight, l->bias, block, role});
    return int(linears_.size()) - 1;
  };
  for (int i = 0; i < o.depth; ++i) {
    auto& layer = *impl_->layers[size_t(i)]->as<modules::PreLnLayerImpl>();
    const std::string b = "layers." + std::to_string(i);
    LayerIds id;
    id.qkv = add(b + ".attn.qkv", layer.attn->qkv.get(), i, LinearRole::Qkv);
    id.proj = add(b + ".attn.proj", layer.attn->proj.get(), i, LinearRole::Proj);
    id.fc1 = add(b + ".mlp.fc1", layer.mlp->fc1.get(), i, LinearRole::Fc1);
    id.fc2 = add(b + ".mlp.fc2", layer.mlp->fc2.get(), i, LinearRole::Fc2);
    ids_.push_back(id);
  }
  head_ = add("head", impl_->head.get(), -1, LinearRole::Head);
}

TinyMdlm::~TinyMdlm() = default;

// Multiply-add = 2 FLOPs; norms, softmax and embeddings lookups are not counted (as for dit).
double TinyMdlm::attn_flops(double R, double Nk) const {
  const double D = options_.hidden_size;
  return 2 * R * D * 3 * D + 4 * R * Nk * D + 2 * R * D * D;  // qkv, scores + weighted sum, proj
}
double TinyMdlm::mlp_flops(double R) const {
  const double D = options_.hidden_size, M = int(D * options_.mlp_ratio);
  return 4 * R * D * M;
}
double TinyMdlm::model_flops(double O) const { return 2 * O * options_.hidden_size * options_.vocab_size; }

at::Tensor TinyMdlm::example_input(int64_t batch, const at::TensorOptions& options) const {
  return at::full({batch, int64_t(options_.max_length)}, mask_id(), options.dtype(at::kLong));
}

at::Tensor TinyMdlm::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  (void)t;
  Impl& m = *impl_;
  Ops& ops = hooks.ops();
  CL_CHECK(x.dim() == 2 && x.scalar_type() == at::kLong, "tiny_mdlm: x must be int64 token ids [B, L]");
  const int64_t L = x.size(1), ctx = cond.context;
  CL_CHECK(L <= options_.max_length, "tiny_mdlm: a sequence of " << L << " tokens exceeds max_length "
                                                                  << options_.max_length);
  CL_CHECK(ctx >= 0 && ctx < L, "tiny_mdlm: context " << ctx << " must be in [0, " << L << ")");
  const int64_t B = x.size(0), end = cond.block_end < 0 ? L : cond.block_end;
  CL_CHECK(end > ctx && end <= L, "tiny_mdlm: block_end " << end << " must be in (" << ctx << ", " << L << "]");
  SeqForward f;
  f.batch = B;
  f.length = L;
  f.context = ctx;
  f.block_end = end;
  f.tokens = x.cpu();
  f.state = cond.token_state.defined() ? cond.token_state.cpu() : at::Tensor();
  f.confidence = cond.confidence.defined() ? cond.confidence.cpu() : at::Tensor();
  f.num_layers = options_.depth;
  f.step = cond.step;
  f.values = [this, &m](int i, const at::Tensor& h) {  // the v third of the fused qkv projection
    auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
    const LinearRef& qkv = linears_[size_t(ids_[size_t(i)].qkv)];
    const int64_t D = options_.hidden_size, heads = options_.num_heads;
    auto v = at::linear(norm(layer.norm1, h), qkv.weight.narrow(0, 2 * D, D),
                       qkv.bias.defined() ? qkv.bias.narrow(0, 2 * D, D) : at::Tensor());
    return v.view({h.size(0), h.size(1), heads, D / heads}).transpose(1, 2);
  };
  const SeqPlan plan = ops.seq_begin(f);
  CL_CHECK(plan.window < 0, "tiny_mdlm: the ops asked for an attention window, which a bidirectional model "
                            "does not support (use a masked-LM K/V cache, not rolling_kv)");
  at::Tensor rows = plan.rows.defined() ? plan.rows : every_row(B, L);
  CL_CHECK(rows.dim() == 2 && rows.size(0) == B && rows.size(1) >= 1, "tiny_mdlm: the ops' rows must be [B, R >= 1]");
  const int64_t O = end - ctx;
  const int64_t D = options_.hidden_size, heads = options_.num_heads, hd = D / heads;
  auto lin = [&](int id, const at::Tensor& v) { return ops.linear(id, v); };

  return hooks.at(kSiteModel, {x}, [&](const SiteCall& mc) -> Tensors {
    const auto dev_rows = rows.to(mc.inputs[0].device());
    auto h = m.tok_embed->forward(mc.inputs[0].gather(1, dev_rows)) + m.pos_embed.index_select(0, dev_rows.flatten())
                                                                        .view({B, rows.size(1), D});
    h = hooks.at(kSiteBody, {h}, [&](const SiteCall& bc) -> Tensors {
      auto z = bc.inputs[0];
      for (int i = 0; i < options_.depth; ++i) {
        auto& layer = *m.layers[size_t(i)]->as<modules::PreLnLayerImpl>();
        const LayerIds& id = ids_[size_t(i)];
        ops.seq_rows(i, rows, z);
        const double R = double(rows.size(1));
        z = hooks.at(layer_site(i), {z}, [&](const SiteCall& lc) -> Tensors {
          const auto& zin = lc.inputs[0];
          auto a = hooks.at(layer_site(i) + 1, {zin}, [&](const SiteCall& ac) -> Tensors {
            const auto& u = ac.inputs[0];
            const int64_t N = u.size(1);
            auto qkv = lin(id.qkv, norm(layer.norm1, u)).reshape({B, N, 3, heads, hd}).permute({2, 0, 3, 1, 4});
            AttnCall call;
            call.layer = i;
            call.q_positions = rows;
            call.kv_positions = rows;
            auto o = ops.attention(call, qkv[0], qkv[1], qkv[2]);  // keys of all L positions
            return {lin(id.proj, o.transpose(1, 2).reshape({B, N, D}))};
          }, attn_flops(R, ops.attended_keys(i, double(L))))[0];
          auto z1 = zin + a;
          auto f = hooks.at(layer_site(i) + 2, {z1}, [&](const SiteCall& fc) -> Tensors {
            auto u = fc.rows.defined() ? fc.inputs[0].index_select(1, fc.rows) : fc.inputs[0];
            return {lin(id.fc2, at::gelu(lin(id.fc1, norm(layer.norm2, u))))};
          }, mlp_flops(R))[0];
          return {z1 + f};
        }, 0.0)[0];
      }
      ops.seq_rows(options_.depth, rows, z);
      return {z};
    }, 0.0)[0];
    // Logits only for the positions [context, block_end) (what the decoder reads).
    at::Tensor present;
    auto logits = lin(head_, norm(m.norm_f, rows_between(h, rows, ctx, end, &present)));
    // Positions the rows lack: zero logits (a uniform prediction).
    return {present.all().item<bool>() ? logits : logits * present.unsqueeze(-1).to(logits.scalar_type())};
  }, model_flops(double(O)))[0];
}

void TinyMdlm::to(at::Device device, at::ScalarType dtype) { impl_->to(device, dtype); }

std::vector<std::pair<std::string, at::Tensor>> TinyMdlm::named_tensors() { return modules::named_tensors(*impl_); }

std::vector<at::Tensor> TinyMdlm::trainable_parameters() { return modules::trainable_parameters(*impl_); }

void TinyMdlm::load(const std::string& path) {
  load_into(named_tensors(), path, "a trainer for tiny_mdlm (none is bundled yet)");
}

void TinyMdlm::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, named_tensors(), std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

int64_t TinyMdlm::num_parameters() { return modules::num_parameters(*impl_); }

}  // namespace cachelab
