// The CLIP text encoder Stable Diffusion 1.x conditions on (Hugging Face's CLIPTextModel of
// openai/clip-vit-large-patch14; the text half of openai/CLIP's model.py): token + learned
// position embeddings, then `layers` pre-LayerNorm blocks
//   x += out_proj(causal multi-head attention(layer_norm1(x)))
//   x += fc2(quick_gelu(fc1(layer_norm2(x))))          quick_gelu(h) = h * sigmoid(1.702 h)
// and final_layer_norm. The output is that last hidden state [B, L, width] (SD's conditioning),
// not the pooled / projected feature. No padding mask: SD pads with <|endoftext|> and attends to
// every position causally.
//
// Weights load from safetensors under Hugging Face's names (text_encoder/model.safetensors):
//   text_model.embeddings.{token_embedding,position_embedding}.weight
//   text_model.encoder.layers.{i}.{self_attn.{q,k,v,out}_proj, layer_norm1, mlp.fc1, mlp.fc2, layer_norm2}.{weight,bias}
//   text_model.final_layer_norm.{weight,bias}
// or the same under a prefix: `cond_stage_model.transformer.` (a CompVis SD checkpoint), or any
// other before `text_model.` (a whole CLIPModel file); tensors outside text_model (the U-Net, the
// VAE, the vision tower, text_projection) and the position_ids buffer are skipped.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

namespace cachelab {

struct SafetensorsFile;

struct ClipTextOptions {
  int vocab_size = 49408;
  int width = 768;
  int layers = 12;
  int heads = 12;           // CLIP's text models use 64-wide heads: width / 64
  int max_positions = 77;
  double layer_norm_eps = 1e-5;

  template <class V>
  void fields(V& v) {
    v("vocab_size", vocab_size, "token embeddings (49408 for CLIP)");
    v("width", width, "hidden width (768 for ViT-L/14, SD 1.x)");
    v("layers", layers, "transformer blocks (12)");
    v("heads", heads, "attention heads (12; CLIP's heads are 64 wide)");
    v("max_positions", max_positions, "position embeddings (77)");
    v("layer_norm_eps", layer_norm_eps, "LayerNorm epsilon (1e-5)");
  }
  template <class C>
  void check(C& c) const {
    c.require(vocab_size >= 2, "vocab_size", "must be >= 2");
    c.require(width >= 1, "width", "must be >= 1");
    c.require(layers >= 1, "layers", "must be >= 1");
    c.require(heads >= 1 && width % heads == 0, "heads", "must divide width");
    c.require(max_positions >= 2, "max_positions", "must be >= 2");
    c.require(layer_norm_eps > 0, "layer_norm_eps", "must be > 0");
  }
};

// The encoder shape a weights file holds (vocab, width, positions from the embeddings, layers
// from the block names). `heads` 0 takes CLIP's rule, width / 64. Throws when the file holds no
// CLIP text encoder.
ClipTextOptions clip_text_options_of(const SafetensorsFile& file, const std::string& path, int heads = 0);

class ClipTextEncoder {
 public:
  explicit ClipTextEncoder(const ClipTextOptions& o = {});
  // Every encoder tensor must be present with the shape the options imply. Returns the layout
  // found: "hugging-face", "compvis" (cond_stage_model.transformer.) or "prefix `P`".
  std::string load(const std::string& path);
  std::string load(const SafetensorsFile& file, const std::string& path);
  // ids [B, L] int64 (L <= max_positions; the tokenizer's encode() gives L = 77) -> float32
  // [B, L, width], the last hidden state after final_layer_norm.
  at::Tensor encode(const at::Tensor& ids) const;
  // The tensors the encoder expects, by their Hugging Face names, and their shapes.
  std::map<std::string, std::vector<int64_t>> expected_shapes() const;
  const ClipTextOptions& options() const { return o_; }

 private:
  const at::Tensor& w(const std::string& name) const;
  ClipTextOptions o_;
  std::map<std::string, at::Tensor> weights_;  // Hugging Face names, text_model. dropped
  std::vector<at::Tensor> qkv_weight_, qkv_bias_;  // per layer: q, k, v stacked for one matmul
};

}  // namespace cachelab
