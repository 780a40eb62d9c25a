#include "models/clip_text.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <regex>

#include "framework/error.h"
#include "framework/safetensors.h"

namespace cachelab {
namespace {

const char* const kCompvisPrefix = "cond_stage_model.transformer.";
const char* const kHint = "SD 1.5's text_encoder/model.safetensors, or a CompVis checkpoint's cond_stage_model; "
                          "docs/full-size.md";

// `name` = PREFIX + "text_model." + rest: sets prefix and rest. False for tensors outside the text model.
bool split_name(const std::string& name, std::string* prefix, std::string* rest) {
  const size_t at = name.find("text_model.");
  if (at == std::string::npos || (at > 0 && name[at - 1] != '.')) return false;
  *prefix = name.substr(0, at);
  *rest = name.substr(at + 11);
  return true;
}

std::string layout_of(const std::string& prefix) {
  return prefix.empty() ? "hugging-face" : prefix == kCompvisPrefix ? "compvis" : "prefix `" + prefix + "`";
}

at::Tensor quick_gelu(const at::Tensor& x) { return x * at::sigmoid(1.702 * x); }

}  // namespace

ClipTextOptions clip_text_options_of(const SafetensorsFile& f, const std::string& path, int heads) {
  static const std::regex layer_re(R"(encoder\.layers\.(\d+)\..*)");
  ClipTextOptions o;
  int layers = 0;
  bool token = false, position = false;
  for (auto& [name, t] : f.tensors) {
    std::string prefix, rest;
    if (!split_name(name, &prefix, &rest)) continue;
    std::smatch m;
    if (std::regex_match(rest, m, layer_re)) layers = std::max(layers, std::stoi(m[1]) + 1);
    if (rest == "embeddings.token_embedding.weight" && t.dim() == 2) {
      token = true;
      o.vocab_size = int(t.size(0));
      o.width = int(t.size(1));
    }
    if (rest == "embeddings.position_embedding.weight" && t.dim() == 2) {
      position = true;
      o.max_positions = int(t.size(0));
    }
  }
  CL_CHECK(token && position && layers > 0, "`" << path << "` holds no CLIP text encoder (no text_model.embeddings."
                                                  "token_embedding / position_embedding and encoder.layers; "
                                                << kHint << ")");
  o.layers = layers;
  o.heads = heads > 0 ? heads : std::max(1, o.width / 64);
  CL_CHECK(o.width % o.heads == 0, "`" << path << "`: width " << o.width << " is not divisible by " << o.heads
                                       << " heads (give the head count)");
  return o;
}

ClipTextEncoder::ClipTextEncoder(const ClipTextOptions& o) : o_(o) {
  CL_CHECK(o.vocab_size >= 2 && o.width >= 1 && o.layers >= 1 && o.max_positions >= 2 && o.layer_norm_eps > 0,
           "clip_text: vocab_size, width, layers, max_positions and layer_norm_eps must be positive");
  CL_CHECK(o.heads >= 1 && o.width % o.heads == 0, "clip_text: heads " << o.heads << " must divide width " << o.width);
}

std::map<std::string, std::vector<int64_t>> ClipTextEncoder::expected_shapes() const {
  const int64_t W = o_.width;
  std::map<std::string, std::vector<int64_t>> s;
  auto linear = [&](const std::string& p, int64_t out, int64_t in) {
    s[p + ".weight"] = {out, in};
    s[p + ".bias"] = {out};
  };
  auto norm = [&](const std::string& p) { s[p + ".weight"] = s[p + ".bias"] = {W}; };
  s["embeddings.token_embedding.weight"] = {o_.vocab_size, W};
  s["embeddings.position_embedding.weight"] = {o_.max_positions, W};
  for (int i = 0; i < o_.layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    for (const char* k : {"q_proj", "k_proj", "v_proj", "out_proj"}) linear(p + "self_attn." + k, W, W);
    norm(p + "layer_norm1");
    linear(p + "mlp.fc1", 4 * W, W);
    linear(p + "mlp.fc2", W, 4 * W);
    norm(p + "layer_norm2");
  }
  norm("final_layer_norm");
  return s;
}

std::string ClipTextEncoder::load(const std::string& path) { return load(read_safetensors(path), path); }

std::string ClipTextEncoder::load(const SafetensorsFile& f, const std::string& path) {
  const auto want = expected_shapes();
  weights_.clear();
  std::string layout_prefix;
  bool found = false;
  for (auto& [stored, t] : f.tensors) {
    std::string prefix, name;
    if (!split_name(stored, &prefix, &name) || name == "embeddings.position_ids") continue;
    CL_CHECK(!found || prefix == layout_prefix, "CLIP text encoder `" << path << "` holds two text models (`"
                                                                      << layout_prefix << "text_model.` and `" << prefix
                                                                      << "text_model.`)");
    found = true;
    layout_prefix = prefix;
    auto it = want.find(name);
    CL_CHECK(it != want.end(), "CLIP text encoder `" << path << "`: tensor `" << stored << "` is not part of a text "
                                                     << "encoder with width " << o_.width << ", " << o_.layers
                                                     << " layers (" << layout_of(prefix) << " layout)");
    CL_CHECK(t.sizes().vec() == it->second, "CLIP text encoder `" << path << "`: tensor `" << stored << "` has shape "
                                                                  << shape_str(t.sizes()) << ", the encoder expects "
                                                                  << shape_str(it->second));
    weights_[name] = t.to(at::kFloat).contiguous();
  }
  CL_CHECK(found, "`" << path << "` holds no CLIP text encoder (no tensor named [prefix.]text_model.*; " << kHint << ")");
  for (auto& [name, shape] : want)
    CL_CHECK(weights_.count(name), "CLIP text encoder `" << path << "` (" << layout_of(layout_prefix) << " layout) lacks `"
                                                         << layout_prefix << "text_model." << name
                                                         << "`: not a CLIP text encoder of this shape");
  qkv_weight_.clear();
  qkv_bias_.clear();
  for (int i = 0; i < o_.layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".self_attn.";
    qkv_weight_.push_back(at::cat({w(p + "q_proj.weight"), w(p + "k_proj.weight"), w(p + "v_proj.weight")}, 0));
    qkv_bias_.push_back(at::cat({w(p + "q_proj.bias"), w(p + "k_proj.bias"), w(p + "v_proj.bias")}, 0));
  }
  return layout_of(layout_prefix);
}

const at::Tensor& ClipTextEncoder::w(const std::string& name) const {
  auto it = weights_.find(name);
  CL_CHECK(it != weights_.end(), "clip_text: no weights loaded (`" << name << "`); call load() first");
  return it->second;
}

at::Tensor ClipTextEncoder::encode(const at::Tensor& ids) const {
  const at::Tensor& token = w("embeddings.token_embedding.weight");
  CL_CHECK(ids.dim() == 2 && ids.scalar_type() == at::kLong,
           "clip_text: ids must be int64 [batch, length], got " << ids.scalar_type() << " " << shape_str(ids.sizes()));
  const int64_t B = ids.size(0), L = ids.size(1), W = o_.width, H = o_.heads, D = W / H;
  CL_CHECK(L >= 1 && L <= o_.max_positions, "clip_text: " << L << " tokens, the encoder has " << o_.max_positions
                                                           << " positions");
  if (ids.numel() > 0) {
    const int64_t lo = ids.min().item<int64_t>(), hi = ids.max().item<int64_t>();
    CL_CHECK(lo >= 0 && hi < o_.vocab_size, "clip_text: token ids " << lo << ".." << hi << " fall outside the "
                                                                     << "vocabulary of " << o_.vocab_size
                                                                     << " (a tokenizer of another model?)");
  }
  at::Tensor x = at::embedding(token, ids) + w("embeddings.position_embedding.weight").narrow(0, 0, L);
  const at::Tensor causal =
      at::full({L, L}, -std::numeric_limits<float>::infinity(), x.options()).triu(1);  // a position sees itself and before
  const double scale = 1.0 / std::sqrt(double(D));
  for (int i = 0; i < o_.layers; ++i) {
    const std::string p = "encoder.layers." + std::to_string(i) + ".";
    at::Tensor h = at::layer_norm(x, {W}, w(p + "layer_norm1.weight"), w(p + "layer_norm1.bias"), o_.layer_norm_eps);
    auto qkv = at::linear(h, qkv_weight_[size_t(i)], qkv_bias_[size_t(i)]).view({B, L, 3, H, D}).permute({2, 0, 3, 1, 4});
    at::Tensor attn = at::softmax(at::matmul(qkv[0] * scale, qkv[1].transpose(-2, -1)) + causal, -1);
    h = at::matmul(attn, qkv[2]).transpose(1, 2).reshape({B, L, W});
    x = x + at::linear(h, w(p + "self_attn.out_proj.weight"), w(p + "self_attn.out_proj.bias"));
    h = at::layer_norm(x, {W}, w(p + "layer_norm2.weight"), w(p + "layer_norm2.bias"), o_.layer_norm_eps);
    h = quick_gelu(at::linear(h, w(p + "mlp.fc1.weight"), w(p + "mlp.fc1.bias")));
    x = x + at::linear(h, w(p + "mlp.fc2.weight"), w(p + "mlp.fc2.bias"));
  }
  return at::layer_norm(x, {W}, w("final_layer_norm.weight"), w("final_layer_norm.bias"), o_.layer_norm_eps);
}

}  // namespace cachelab
