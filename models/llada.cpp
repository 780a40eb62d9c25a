#include "models/llada.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "framework/error.h"
#include "framework/paths.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

const char* const kMakeHint =
    "tools/fixtures/llada.py (random weights), or download GSAI-ML/LLaDA-8B-Instruct: "
    "config.json, model.safetensors.index.json and its shards";
const std::string kPrefix = "model.transformer.";

nlohmann::json read_json(const std::string& path, const char* what) {
  std::ifstream in(path);
  CL_CHECK(in.good(), "llada: " << what << " `" << path << "` not found");
  try {
    nlohmann::json j = nlohmann::json::parse(in);
    CL_CHECK(j.is_object(), "llada: " << what << " `" << path << "` is not a JSON object");
    return j;
  } catch (const nlohmann::json::exception& e) {
    CL_FAIL("llada: " << what << " `" << path << "` is not valid JSON: " << e.what());
  }
}

// Reads the fields of a public config.json; an absent or null key takes the default of the
// reference's ModelConfig (passed in), as the modeling code does.
struct ConfigJson {
  const nlohmann::json& j;
  const std::string& path;
  const nlohmann::json* find(const char* key) const {
    auto it = j.find(key);
    return it == j.end() || it->is_null() ? nullptr : &*it;
  }
  std::string at(const char* key) const { return "llada: `" + path + "`, key `" + key + "`"; }
  int64_t integer(const char* key, int64_t dflt, bool required = false) const {
    const auto* v = find(key);
    CL_CHECK(v || !required, at(key) << " is missing: cachelab needs it to build the model");
    if (!v) return dflt;
    CL_CHECK(v->is_number_integer(), at(key) << " = " << v->dump() << " is not an integer");
    return v->get<int64_t>();
  }
  double number(const char* key, double dflt) const {
    const auto* v = find(key);
    if (!v) return dflt;
    CL_CHECK(v->is_number(), at(key) << " = " << v->dump() << " is not a number");
    return v->get<double>();
  }
  bool boolean(const char* key, bool dflt) const {
    const auto* v = find(key);
    if (!v) return dflt;
    CL_CHECK(v->is_boolean(), at(key) << " = " << v->dump() << " is not true or false");
    return v->get<bool>();
  }
  std::string text(const char* key, const std::string& dflt) const {
    const auto* v = find(key);
    if (!v) return dflt;
    CL_CHECK(v->is_string(), at(key) << " = " << v->dump() << " is not a string");
    return v->get<std::string>();
  }
  // A setting the reference supports but cachelab computes one way only.
  template <class T>
  void only(const char* key, const T& value, const T& supported, const char* what) const {
    std::ostringstream v, s;
    v << std::boolalpha << value;
    s << std::boolalpha << supported;
    CL_CHECK(value == supported, at(key) << " = " << v.str() << ": cachelab's llada computes " << what << " only ("
                                         << key << " = " << s.str() << ", as LLaDA-8B)");
  }
};

// RMSNorm as the reference: in float32, back to the input dtype, then the weight.
at::Tensor rms_norm(const at::Tensor& x, const at::Tensor& w, double eps) {
  auto xf = x.to(at::kFloat);
  auto var = xf.pow(2).mean(-1, /*keepdim=*/true);
  return w * (xf * at::rsqrt(var + eps)).to(x.scalar_type());
}

// [x1, x2] -> [-x2, x1] over the two halves of the last dimension.
at::Tensor rotate_half(const at::Tensor& x) {
  const int64_t h = x.size(-1) / 2;
  return at::cat({-x.narrow(-1, h, h), x.narrow(-1, 0, h)}, -1);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

}  // namespace

LladaOptions llada_architecture(const LladaOptions& o) {
  if (o.config.empty()) return o;
  const std::string path = resolve_path(o.config);
  const nlohmann::json j = read_json(path, "config");
  ConfigJson c{j, path};
  c.only("block_type", c.text("block_type", "sequential"), std::string("llama"), "the Llama-style block");
  c.only("activation_type", c.text("activation_type", "swiglu"), std::string("silu"),
         "the SwiGLU MLP silu(ff_proj(x)) * up_proj(x)");
  c.only("layer_norm_type", c.text("layer_norm_type", "default"), std::string("rms"), "RMSNorm");
  c.only("layer_norm_with_affine", c.boolean("layer_norm_with_affine", true), true, "norms with a weight");
  c.only("rope", c.boolean("rope", false), true, "rotary position embeddings");
  c.only("alibi", c.boolean("alibi", false), false, "rotary position embeddings");
  c.only("rope_full_precision", c.boolean("rope_full_precision", true), true, "RoPE in float32");
  c.only("weight_tying", c.boolean("weight_tying", true), false, "a separate head (model.transformer.ff_out)");
  const bool bias = c.boolean("include_bias", false);
  c.only("include_bias", bias, false, "linear layers without biases");
  c.only("include_qkv_bias", c.boolean("include_qkv_bias", false), false, "linear layers without biases");
  c.only("bias_for_layer_norm", c.boolean("bias_for_layer_norm", bias), false, "norms without biases");
  c.only("attention_layer_norm", c.boolean("attention_layer_norm", false), false, "attention without q/k norms");
  c.only("input_emb_norm", c.boolean("input_emb_norm", false), false, "unscaled input embeddings");
  c.only("scale_logits", c.boolean("scale_logits", false), false, "unscaled logits");
  c.only("block_group_size", c.integer("block_group_size", 1), int64_t(1),
         "ungrouped blocks (model.transformer.blocks.i)");

  LladaOptions a = o;
  a.d_model = int(c.integer("d_model", 0, true));
  a.n_heads = int(c.integer("n_heads", 0, true));
  a.n_layers = int(c.integer("n_layers", 0, true));
  int64_t kv = c.integer("n_kv_heads", a.n_heads);
  if (const auto* mq = c.find("multi_query_attention"); mq && mq->is_boolean() && mq->get<bool>()) kv = 1;
  CL_CHECK(kv == a.n_heads, c.at("n_kv_heads") << " = " << kv << " differs from n_heads " << a.n_heads
                                               << ": grouped-query attention is not implemented (LLaDA-8B uses "
                                                  "multi-head attention, n_kv_heads = n_heads)");
  const int64_t ratio = c.integer("mlp_ratio", 4);
  a.mlp_hidden_size = int(c.integer("mlp_hidden_size", ratio * a.d_model));
  const int64_t vocab = c.integer("vocab_size", 0, true);
  a.vocab_size = int(c.integer("embedding_size", vocab));
  CL_CHECK(a.vocab_size >= vocab, c.at("embedding_size") << " = " << a.vocab_size << " is below vocab_size " << vocab);
  a.mask_token_id = int(c.integer("mask_token_id", 0, true));
  a.rope_theta = c.number("rope_theta", 10000.0);
  a.rms_norm_eps = c.number("rms_norm_eps", 1e-5);
  a.max_sequence_length = int(c.integer("max_sequence_length", 1024));

  // An explicit key must be left at its default or agree with the file.
  const LladaOptions d;
  auto agree = [&](const char* key, double given, double dflt, double file) {
    CL_CHECK(given == dflt || given == file, "llada: key `" << key << "` = " << given << " disagrees with `" << path
                                                            << "` (" << file << "); leave it out when `config` is set");
  };
  agree("d_model", o.d_model, d.d_model, a.d_model);
  agree("n_layers", o.n_layers, d.n_layers, a.n_layers);
  agree("n_heads", o.n_heads, d.n_heads, a.n_heads);
  agree("mlp_hidden_size", o.mlp_hidden_size, d.mlp_hidden_size, a.mlp_hidden_size);
  agree("vocab_size", o.vocab_size, d.vocab_size, a.vocab_size);
  agree("mask_token_id", o.mask_token_id, d.mask_token_id, a.mask_token_id);
  agree("rope_theta", o.rope_theta, d.rope_theta, a.rope_theta);
  agree("rms_norm_eps", o.rms_norm_eps, d.rms_norm_eps, a.rms_norm_eps);
  agree("max_sequence_length", o.max_sequence_length, d.max_sequence_length, a.max_sequence_length);

  CL_CHECK(a.d_model >= 1 && a.n_heads >= 1 && a.d_model % a.n_heads == 0 && (a.d_model / a.n_heads) % 2 == 0,
           "llada: `" << path << "`: d_model " << a.d_model << " is not a multiple of n_heads " << a.n_heads
                      << " with heads of even width");
  CL_CHECK(a.n_layers >= 1 && a.mlp_hidden_size >= 1 && a.max_sequence_length >= 2 && a.rms_norm_eps > 0 &&
               a.rope_theta > 0,
           "llada: `" << path << "`: n_layers, mlp_hidden_size, max_sequence_length, rms_norm_eps and rope_theta "
                         "must be positive");
  CL_CHECK(a.mask_token_id >= 0 && a.mask_token_id < a.vocab_size,
           c.at("mask_token_id") << " = " << a.mask_token_id << " lies outside the " << a.vocab_size << " embeddings");
  return a;
}

Llada::Llada(const LladaOptions& o) : options_(o), arch_(llada_architecture(o)) {
  const LladaOptions& a = arch_;
  CL_CHECK(a.d_model % a.n_heads == 0 && (a.d_model / a.n_heads) % 2 == 0,
           "llada: d_model " << a.d_model << " is not a multiple of n_heads " << a.n_heads
                             << " with heads of even width");
  CL_CHECK(a.mask_token_id >= 0 && a.mask_token_id < a.vocab_size,
           "llada: mask_token_id " << a.mask_token_id << " lies outside the vocabulary of " << a.vocab_size);
  const int64_t D = a.d_model, M = a.mlp_hidden_size, V = a.vocab_size;
  auto param = [&](const std::string& name, std::vector<int64_t> shape) {
    params_.emplace_back(kPrefix + name, at::empty(shape, at::kFloat));
    return params_.back().second;
  };
  auto linear = [&](const std::string& name, int64_t out, int64_t in, int block, LinearRole role) {
    linears_.push_back({kPrefix + name, param(name + ".weight", {out, in}), at::Tensor(), block, role});
    return int(linears_.size()) - 1;
  };
  wte_ = param("wte.weight", {V, D});
  for (int i = 0; i < a.n_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i) + ".";
    Layer l;
    l.attn_norm = param(b + "attn_norm.weight", {D});
    l.q = linear(b + "q_proj", D, D, i, LinearRole::Qkv);
    l.k = linear(b + "k_proj", D, D, i, LinearRole::Qkv);
    l.v = linear(b + "v_proj", D, D, i, LinearRole::Qkv);
    l.out = linear(b + "attn_out", D, D, i, LinearRole::Proj);
    l.ff_norm = param(b + "ff_norm.weight", {D});
    l.ff_proj = linear(b + "ff_proj", M, D, i, LinearRole::Fc1);
    l.up = linear(b + "up_proj", M, D, i, LinearRole::Fc1);
    l.ff_out = linear(b + "ff_out", D, M, i, LinearRole::Fc2);
    layers_.push_back(l);
  }
  ln_f_ = param("ln_f.weight", {D});
  head_ = linear("ff_out", V, D, -1, LinearRole::Head);
  if (a.vision_tokens > 0) vision_ = linear("vision_proj", D, a.vision_dim, -1, LinearRole::Embed);

  // Random initialisation: linears N(0, 1/fan_in), the embedding N(0, 1), norm weights 1.
  {
    c10::NoGradGuard guard;
    auto gen = at::detail::createCPUGenerator(uint64_t(o.init_seed));
    for (auto& [name, t] : params_) {
      if (t.dim() == 1)
        t.fill_(1.0);
      else
        t.normal_(0.0, t.is_same(wte_) ? 1.0 : 1.0 / std::sqrt(double(t.size(1))), gen);
    }
  }
  for (auto& [name, t] : params_) t.requires_grad_(true);
  if (!o.weights.empty()) load(resolve_path(o.weights));

  const double L = a.max_sequence_length;
  sites_.push_back({"model", -1, model_flops(L), SiteKind::Model});
  sites_.push_back({"body", kSiteModel, 0.0, SiteKind::Body});
  for (int i = 0; i < a.n_layers; ++i) {
    const std::string b = "blocks." + std::to_string(i);
    const int blk = int(sites_.size());
    sites_.push_back({b, kSiteBody, 0.0, SiteKind::Block, i});
    sites_.push_back({b + ".attn", blk, attn_flops(L, L), SiteKind::Attn, i});
    sites_.push_back({b + ".mlp", blk, mlp_flops(L), SiteKind::Mlp, i, 0, /*rows=*/true, 0.0});
  }
}

Llada::~Llada() = default;

// Multiply-add = 2 FLOPs; norms, RoPE, softmax and the embedding lookup are not counted.
double Llada::attn_flops(double R, double Nk) const {
  const double D = arch_.d_model;
  return 2 * R * D * 3 * D + 4 * R * Nk * D + 2 * R * D * D;  // q, k, v; scores + weighted sum; attn_out
}
double Llada::mlp_flops(double R) const { return 6 * R * double(arch_.d_model) * double(arch_.mlp_hidden_size); }
double Llada::model_flops(double O) const { return 2 * O * double(arch_.d_model) * double(arch_.vocab_size); }
double Llada::visual_flops(const at::Tensor& rows) const {
  if (vision_ < 0) return 0.0;  // per sample: the visual rows computed through vision_proj
  const double visual = double(rows.lt(arch_.vision_tokens).sum().item<int64_t>()) / double(rows.size(0));
  return 2 * visual * double(arch_.vision_dim) * double(arch_.d_model);
}

at::Tensor Llada::example_input(int64_t batch, const at::TensorOptions& options) const {
  return at::full({batch, int64_t(arch_.max_sequence_length)}, mask_id(), options.dtype(at::kLong));
}

at::Tensor Llada::block(int i, const at::Tensor& h, const at::Tensor& rows, int64_t keys, const Layout& layout,
                        Hooks& hooks) {
  Ops& ops = hooks.ops();
  const Layer& l = layers_[size_t(i)];
  const int64_t D = arch_.d_model, H = arch_.n_heads, hd = D / H;
  const double eps = arch_.rms_norm_eps;
  return hooks.at(block_site(i), {h}, [&](const SiteCall& lc) -> Tensors {
    const auto& zin = lc.inputs[0];
    auto a = hooks.at(block_site(i) + 1, {zin}, [&](const SiteCall& ac) -> Tensors {
      const auto& u = ac.inputs[0];
      const int64_t B = u.size(0), R = u.size(1);
      auto n = rms_norm(u, l.attn_norm, eps);
      auto heads = [&](int id) { return ops.linear(id, n).view({B, R, H, hd}).transpose(1, 2); };
      auto q = heads(l.q), k = heads(l.k), v = heads(l.v);
      // RoPE at each row's own position, angles in float32 as the reference.
      auto inv_freq = at::reciprocal(at::pow(arch_.rope_theta, at::arange(0, hd, 2, at::kFloat) / double(hd)));
      const at::Tensor at_pos = layout.positions.defined() ? layout.positions.gather(1, rows) : rows;
      auto freqs = at_pos.to(at::kFloat).unsqueeze(-1) * inv_freq;  // [B, R, hd / 2]
      auto emb = at::cat({freqs, freqs}, -1).unsqueeze(1).to(u.device());  // [B, 1, R, hd]
      auto sin = emb.sin(), cos = emb.cos();
      auto rope = [&](const at::Tensor& t) {
        auto f = t.to(at::kFloat);
        return (f * cos + rotate_half(f) * sin).to(t.scalar_type());
      };
      AttnCall call;
      call.layer = i;
      call.q_positions = rows;
      call.kv_positions = rows;
      call.order = layout.order;
      call.group = layout.group;
      auto o = ops.attention(call, rope(q), rope(k), v);  // [B, H, R, hd]
      return {ops.linear(l.out, o.transpose(1, 2).reshape({B, R, D}))};
    }, attn_flops(double(zin.size(1)), ops.attended_keys(i, double(keys))))[0];
    auto z1 = zin + a;
    auto f = hooks.at(block_site(i) + 2, {z1}, [&](const SiteCall& fc) -> Tensors {
      auto u = fc.rows.defined() ? fc.inputs[0].index_select(1, fc.rows) : fc.inputs[0];
      auto n = rms_norm(u, l.ff_norm, eps);
      return {ops.linear(l.ff_out, at::silu(ops.linear(l.ff_proj, n)) * ops.linear(l.up, n))};
    }, mlp_flops(double(z1.size(1))))[0];
    return {z1 + f};
  }, 0.0)[0];
}

Llada::Layout Llada::attention_layout(const at::Tensor& x, const Cond& cond, int64_t end, int64_t& Lc,
                                      int64_t& settled) const {
  const int64_t B = x.size(0), L = x.size(1), ctx = cond.context;
  Layout layout;
  at::Tensor& order = layout.order;
  if (arch_.block_size > 0) {
    // The prompt: Cond::token_state's kTokenPrompt positions; without token states (a warm-up
    // pass) the blocks start at position 0.
    int64_t P = 0;
    if (cond.token_state.defined()) {
      CL_CHECK(cond.token_state.dim() == 2 && cond.token_state.size(1) == L,
               "llada: Cond::token_state must be [B, " << L << "], got " << shape_str(cond.token_state.sizes()));
      const auto prompt = cond.token_state.to(at::kCPU).eq(kTokenPrompt).sum(1);
      P = prompt.min().item<int64_t>();
      CL_CHECK(P == prompt.max().item<int64_t>(), "llada: block-causal attention needs one prompt length in the batch");
    }
    const int64_t bs = arch_.block_size;
    auto pos = at::arange(L, at::kLong);
    order = at::where(pos.lt(P), at::zeros_like(pos), (pos - P).div(bs, "floor") + 1).unsqueeze(0);  // block index
    Lc = end - 1 < P ? P : std::min(L, P + ((end - 1 - P) / bs + 1) * bs);
    settled = ctx < P ? 0 : P + (ctx - P) / bs * bs;
  } else if (arch_.topological) {
    const auto observed = x.to(at::kCPU).ne(mask_id());  // [B, L]
    const auto obs = observed.to(at::kLong), msk = 1 - obs;
    order = at::where(observed, obs.cumsum(1) - 1, obs.sum(1, true) + msk.cumsum(1) - 1);
    auto pos = at::arange(1, L + 1, at::kLong).unsqueeze(0);
    Lc = std::max(end, (obs * pos).max().item<int64_t>());  // through the last observed position
    settled = msk.numel() == 0 ? 0 : at::where(msk.sum(1).gt(0), msk.argmax(1), at::full({B}, L, at::kLong)).min().item<int64_t>();
  } else if (arch_.tidar > 0) {
    auto pos = at::arange(L, at::kLong).unsqueeze(0).expand({B, L});
    if (cond.positions.defined()) {
      CL_CHECK(cond.positions.dim() == 2 && cond.positions.size(0) == B && cond.positions.size(1) == L,
               "llada: Cond::positions must be [" << B << ", " << L << "], got " << shape_str(cond.positions.sizes()));
      pos = cond.positions.to(at::kCPU, at::kLong);
      CL_CHECK(pos.numel() == 0 || (pos.min().item<int64_t>() >= 0 && pos.max().item<int64_t>() < arch_.max_sequence_length),
               "llada: Cond::positions must lie in [0, max_sequence_length " << arch_.max_sequence_length << ")");
    }
    // A run of MASK breaks where the MASK before sits elsewhere than the position before; runs
    // are cut into blocks of k.
    const auto masked = x.to(at::kCPU).eq(mask_id());
    auto prev_masked = at::zeros_like(masked), prev_pos = at::full_like(pos, -2);
    if (L > 1) {
      prev_masked.narrow(1, 1, L - 1).copy_(masked.narrow(1, 0, L - 1));
      prev_pos.narrow(1, 1, L - 1).copy_(pos.narrow(1, 0, L - 1));
    }
    auto idx = at::arange(L, at::kLong).unsqueeze(0).expand({B, L});
    auto first_of = [&](const at::Tensor& starts) {  // the index of the start at or before each position
      return std::get<0>(at::where(starts, idx, at::zeros_like(idx)).cummax(1));
    };
    const auto runs = masked & ~(prev_masked & pos.eq(prev_pos + 1));
    const auto starts = masked & (idx - first_of(runs)).remainder(arch_.tidar).eq(0);
    layout.group = starts.to(at::kLong).cumsum(1) * masked.to(at::kLong);
    const auto start_at = first_of(starts);
    order = at::where(masked, pos.gather(1, start_at) - 1, pos);  // a block sees the tokens before its start
    layout.positions = pos;
    settled = ctx;
  }
  return layout;
}

at::Tensor Llada::forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) {
  (void)t;
  Ops& ops = hooks.ops();
  CL_CHECK(x.dim() == 2 && x.scalar_type() == at::kLong, "llada: x must be int64 token ids [B, L]");
  const int64_t B = x.size(0), L = x.size(1), ctx = cond.context;
  const int64_t end = cond.block_end < 0 ? L : cond.block_end;
  CL_CHECK(L <= arch_.max_sequence_length,
           "llada: a sequence of " << L << " tokens exceeds max_sequence_length " << arch_.max_sequence_length);
  CL_CHECK(ctx >= 0 && ctx < end && end <= L,
           "llada: context " << ctx << " and block end " << end << " must satisfy 0 <= context < block_end <= " << L);
  CL_CHECK(x.numel() == 0 || (x.min().item<int64_t>() >= 0 && x.max().item<int64_t>() < vocab_size()),
           "llada: token ids must lie in [0, " << vocab_size() << ")");
  // Block-causal, topological and TiDAR attention: the layout, where the forward stops and
  // the settled prefix.
  int64_t Lc = L, settled = 0;
  Layout layout = attention_layout(x, cond, end, Lc, settled);
  auto cut = [&](const at::Tensor& t) { return t.defined() && Lc < L ? t.narrow(1, 0, Lc) : t; };
  const at::Tensor ids = cut(x);
  layout.order = cut(layout.order);
  SeqForward f;
  f.batch = B;
  f.length = Lc;
  f.context = ctx;
  f.block_end = end;
  f.tokens = ids.to(at::kCPU);
  if (cond.token_state.defined()) f.state = cut(cond.token_state.to(at::kCPU));
  if (cond.confidence.defined()) f.confidence = cut(cond.confidence.to(at::kCPU));
  f.num_layers = arch_.n_layers;
  f.step = cond.step;
  f.visual = arch_.vision_tokens;
  f.kind = sequence_kind();
  f.settled = settled;
  f.values = [this, &ops](int i, const at::Tensor& h) {
    const Layer& l = layers_[size_t(i)];
    const int64_t H = arch_.n_heads, hd = arch_.d_model / H;
    return ops.linear(l.v, rms_norm(h, l.attn_norm, arch_.rms_norm_eps)).view({h.size(0), h.size(1), H, hd}).transpose(1, 2);
  };
  const SeqPlan plan = ops.seq_begin(f);
  CL_CHECK(plan.window < 0, "llada: the ops asked for an attention window, which a bidirectional model does not "
                            "support (use a prefix / block K/V cache, not rolling_kv)");
  at::Tensor rows = plan.rows.defined() ? plan.rows : every_row(B, Lc);
  CL_CHECK(rows.dim() == 2 && rows.size(0) == B && rows.scalar_type() == at::kLong,
           "llada: the ops' rows must be int64 [B, R], got " << shape_str(rows.sizes()));
  const int64_t O = end - ctx;

  auto logits = hooks.at(kSiteModel, {ids}, [&](const SiteCall& mc) -> Tensors {
    const auto& ids = mc.inputs[0];
    const auto row_ids = ids.gather(1, rows.to(ids.device()));
    auto h = at::embedding(wte_, row_ids);
    if (vision_ >= 0) {  // visual tokens: + vision_proj(the image's patch)
      const int64_t N = arch_.vision_tokens, E = arch_.vision_dim, R = rows.size(1);
      CL_CHECK(cond.embeddings.defined() && cond.embeddings.dim() == 3 && cond.embeddings.size(0) == B &&
                   cond.embeddings.size(1) == N && cond.embeddings.size(2) == E,
               "llada: a vision-language model (vision_tokens " << N << ") reads the image's patches as Cond::embeddings ["
                   << B << ", " << N << ", " << E << "], got "
                   << (cond.embeddings.defined() ? shape_str(cond.embeddings.sizes()) : std::string("none"))
                   << " (decode a visual task: read_digits, sum_digits, spell_digits)");
      const auto r = rows.to(h.device());
      const auto visual = r.lt(N).unsqueeze(-1).to(h.scalar_type());
      const auto patches = cond.embeddings.to(h.device(), h.scalar_type()).gather(1, r.clamp_max(N - 1).unsqueeze(-1).expand({B, R, E}));
      h = h + ops.linear(vision_, patches * visual);
    }
    if (cond.soft_tokens.defined()) {  // iteration smoothing: MASK mixed with the weighted tokens
      CL_CHECK(cond.soft_tokens.dim() == 3 && cond.soft_tokens.size(0) == B && cond.soft_tokens.size(1) == L &&
                   cond.soft_tokens.size(2) == vocab_size(),
               "llada: Cond::soft_tokens must be [" << B << ", " << L << ", " << vocab_size() << "], got "
                                                   << shape_str(cond.soft_tokens.sizes()));
      const auto r = rows.to(h.device());
      auto w = cond.soft_tokens.to(h.device(), h.scalar_type())
                   .gather(1, r.unsqueeze(-1).expand({B, r.size(1), vocab_size()}));  // [B, R, V]
      w = w * row_ids.eq(mask_id()).unsqueeze(-1).to(w.scalar_type());
      h = h * (1 - w.sum(-1, true)) + at::matmul(w, wte_);
    }
    h = hooks.at(kSiteBody, {h}, [&](const SiteCall& bc) -> Tensors {
      auto z = bc.inputs[0];
      for (int i = 0; i < arch_.n_layers; ++i) {
        ops.seq_rows(i, rows, z);
        z = block(i, z, rows, Lc, layout, hooks);  // every query is scored against all Lc keys
      }
      return {z};
    }, 0.0)[0];
    ops.seq_rows(arch_.n_layers, rows, h);
    at::Tensor present;
    auto out = ops.linear(head_, rms_norm(rows_between(h, rows, ctx, end, &present), ln_f_, arch_.rms_norm_eps));
    // Positions the rows lack: zero logits (a uniform prediction).
    return {present.all().item<bool>() ? out : out * present.unsqueeze(-1).to(out.scalar_type())};
  }, model_flops(double(O)) + visual_flops(rows) + (cond.soft_tokens.defined() ? 2.0 * double(rows.size(1)) * double(arch_.d_model) *
                                                                 double(arch_.vocab_size)
                                                           : 0.0))[0];  // the head (and the soft inputs' mix)
  return logits.to(at::kFloat);
}

std::vector<at::Tensor> Llada::trainable_parameters() { return tensors_of(params_); }

int64_t Llada::num_parameters() { return numel_of(params_); }

void Llada::to(at::Device device, at::ScalarType dtype) { move_tensors(params_, device, dtype); }

void Llada::save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) {
  write_safetensors(path, params_, std::map<std::string, std::string>(metadata.begin(), metadata.end()));
}

void Llada::load(const std::string& path) {
  if (!ends_with(path, ".json")) {
    load_into(params_, path, kMakeHint);
    return;
  }
  // A sharded checkpoint: the index's weight_map names each tensor's shard (next to the index).
  const nlohmann::json j = read_json(path, "weights index");
  auto wm = j.find("weight_map");
  CL_CHECK(wm != j.end() && wm->is_object(),
           "llada: weights index `" << path << "` has no `weight_map` object (is it a model.safetensors.index.json?)");
  std::map<std::string, std::string> shard_of;
  for (auto it = wm->begin(); it != wm->end(); ++it) {
    CL_CHECK(it->is_string(),
             "llada: weights index `" << path << "`: the shard of `" << it.key() << "` is not a file name");
    shard_of[it.key()] = it->get<std::string>();
  }
  std::map<std::string, at::Tensor> mine(params_.begin(), params_.end());
  for (auto& [name, t] : params_)
    CL_CHECK(shard_of.count(name), "llada: weights index `" << path << "` has no tensor `" << name
                                                            << "`: it was made for a different model configuration "
                                                               "(check backbone.config / n_layers)");
  std::set<std::string> files;
  for (auto& [name, file] : shard_of) {
    CL_CHECK(mine.count(name), "llada: weights index `" << path << "` lists tensor `" << name << "` (in " << file
                                                        << ") that the configured model lacks: configuration mismatch");
    files.insert(file);
  }
  const auto dir = std::filesystem::path(path).parent_path();
  for (const auto& file : files)
    CL_CHECK(std::filesystem::exists(dir / file),
             "llada: shard `" << (dir / file).string() << "` named by weights index `" << path << "` not found");
  std::set<std::string> loaded;
  c10::NoGradGuard guard;
  for (const auto& file : files) {  // one shard in memory at a time
    const std::string shard = (dir / file).string();
    SafetensorsFile f = read_safetensors(shard);
    for (auto& [name, src] : f.tensors) {
      auto it = shard_of.find(name);
      CL_CHECK(it != shard_of.end() && it->second == file,
               "llada: shard `" << shard << "` holds tensor `" << name << "`, which weights index `" << path
                                << (it == shard_of.end() ? "` does not list" : "` places in " + it->second));
      auto& dst = mine.at(name);
      CL_CHECK(src.sizes() == dst.sizes(),
               "llada: shard `" << shard << "`: tensor `" << name << "` has shape " << shape_str(src.sizes())
                                << " but the configured model expects " << shape_str(dst.sizes())
                                << "; the architecture (config / d_model, n_heads, mlp_hidden_size, vocab_size) "
                                   "does not match the checkpoint");
      dst.copy_(src.to(dst.scalar_type()));
      loaded.insert(name);
    }
  }
  for (auto& [name, file] : shard_of)
    CL_CHECK(loaded.count(name), "llada: weights index `" << path << "` places tensor `" << name << "` in " << file
                                                          << ", which does not hold it");
}

}  // namespace cachelab
