// A small bidirectional pre-LN transformer over token ids: the masked-diffusion LM
// (LLaDA-style) the `mdlm` pipeline decodes. It takes no timestep (t is ignored, as in
// LLaDA): the MASK tokens tell it what to predict.
//
// Checkpoint names: tok_embed.weight [V + 1, D] (row V is MASK), pos_embed [max_length, D],
// layers.i.{norm1, attn.qkv, attn.proj, norm2, mlp.fc1, mlp.fc2}.{weight, bias},
// norm_f.{weight, bias}, head.{weight, bias} (D -> V). Every linear layer runs through the
// ops, and attention through Ops::attention with the positions of queries and keys.
//
// Sites (index: name, kind): 0 model (Model; input the token ids [B, L], output logits), 1 body
// (Body), then per layer i: 2+3i layers.i (Block), 3+3i layers.i.attn (Attn), 4+3i
// layers.i.mlp (Mlp; accepts a row subset). Body and block sites carry the residual stream
// [B, R, D] of the positions computed this forward.
//
// K/V caches (framework/ops.h): forward asks Ops::seq_begin which rows (positions, per sample)
// to compute and calls Ops::seq_rows before every layer and before the head, so a cache may
// change them; attention calls carry the rows' positions and the ops supplies the keys and
// values of the other positions. Logits cover positions [context, block_end) (Cond), which
// the final rows must include. FLOPs are passed per call (what ran): the site table holds
// the figures of a full forward of max_length tokens with no context.
#pragma once
#include <memory>
#include <string>

#include "framework/backbone.h"
#include "models/masked_lm.h"

namespace cachelab {

struct TinyMdlmOptions {
  int vocab_size = 32;   // real tokens; the MASK id is vocab_size
  int hidden_size = 64;  // token width D
  int depth = 2;
  int num_heads = 4;
  double mlp_ratio = 4.0;
  int max_length = 64;   // positions of the learned position table
  std::string weights;   // safetensors file (relative to the project root); "" = random init
  int64_t init_seed = 0;

  template <class V>
  void fields(V& v) {
    v("vocab_size", vocab_size, "real tokens (ids 0 .. vocab_size - 1); the MASK id is vocab_size");
    v("hidden_size", hidden_size, "token width");
    v("depth", depth, "number of transformer layers");
    v("num_heads", num_heads, "attention heads");
    v("mlp_ratio", mlp_ratio, "MLP hidden width / token width");
    v("max_length", max_length, "longest sequence (prompt + generation), in tokens");
    v("weights", weights, "safetensors weights (relative to the project root); empty = random init");
    v("init_seed", init_seed, "seed of the random initialisation");
  }
  template <class C>
  void check(C& c) const {
    c.require(vocab_size >= 2, "vocab_size", "must be >= 2");
    c.require(hidden_size >= 1, "hidden_size", "must be >= 1");
    c.require(num_heads >= 1 && hidden_size % num_heads == 0, "num_heads", "must divide hidden_size");
    c.require(depth >= 1, "depth", "must be >= 1");
    c.require(mlp_ratio > 0, "mlp_ratio", "must be > 0");
    c.require(max_length >= 2, "max_length", "must be >= 2");
  }
};

class TinyMdlm final : public Backbone, public MaskedLm {
 public:
  static constexpr int kSiteModel = 0, kSiteBody = 1;
  static int layer_site(int i) { return 2 + 3 * i; }

  explicit TinyMdlm(const TinyMdlmOptions& options);
  ~TinyMdlm() override;
  // x: [B, L] int64 token ids (L <= max_length); cond.context: leading positions that are
  // finished (prompt and decoded blocks), 0 <= context < L. Returns logits [B, end - context, V]
  // float for positions [context, end), end = cond.block_end (-1 = L).
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override { return {options_.max_length}; }
  // MASK tokens of max_length (int64, on options' device): what warm-up passes see.
  at::Tensor example_input(int64_t batch, const at::TensorOptions& options) const override;
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override;
  std::vector<at::Tensor> trainable_parameters() override;
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;

  int64_t vocab_size() const override { return options_.vocab_size; }
  int64_t mask_id() const override { return options_.vocab_size; }
  int64_t max_length() const override { return options_.max_length; }
  SequenceKind sequence_kind() const override { return SequenceKind::Bidirectional; }
  const TinyMdlmOptions& options() const { return options_; }

 private:
  struct Impl;
  struct LayerIds {
    int qkv = 0, proj = 0, fc1 = 0, fc2 = 0;
  };
  // FLOPs of one sample: R positions computed, Nk keys attended, O logit rows.
  double attn_flops(double R, double Nk) const;
  double mlp_flops(double R) const;
  double model_flops(double O) const;

  std::unique_ptr<Impl> impl_;
  TinyMdlmOptions options_;
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
  std::vector<LayerIds> ids_;
  int head_ = 0;
};

}  // namespace cachelab
