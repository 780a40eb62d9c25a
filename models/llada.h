// LLaDA (Nie et al., 2025), the masked-diffusion LM of GSAI-ML/LLaDA-8B-{Base,Instruct}:
// a bidirectional Llama-style transformer (RMSNorm, RoPE, SwiGLU, no biases) that takes no
// timestep; the MASK token (inside the vocabulary) tells it what to predict. Parameter for
// parameter as the public modeling code (modeling_llada.py, block_type `llama`), so the
// published checkpoint loads as it is: a config.json and sharded bf16 safetensors with
// their model.safetensors.index.json.
//
// Checkpoint names (all `.weight`, no biases): model.transformer.wte [V, D],
// model.transformer.blocks.i.{attn_norm [D], q_proj, k_proj, v_proj, attn_out [D, D],
// ff_norm [D], ff_proj, up_proj [M, D], ff_out [D, M]}, model.transformer.ln_f [D],
// model.transformer.ff_out [V, D] (the head; weight tying off). V = config.json's
// embedding_size (the logits' width, MASK included), M = mlp_hidden_size. Block i computes
//   h += attn_out(attention(RoPE(q_proj(n)), RoPE(k_proj(n)), v_proj(n))),  n = rmsnorm(h) * attn_norm
//   h += ff_out(silu(ff_proj(n)) * up_proj(n)),                                n = rmsnorm(h) * ff_norm
// with RoPE over the two halves of each head (theta rope_theta, angles in float32).
//
// Sites (index: name, kind): 0 model (Model; input the token ids [B, L], output logits),
// 1 body (Body), then per block i: 2+3i blocks.i (Block), 3+3i blocks.i.attn (Attn), 4+3i
// blocks.i.mlp (Mlp; accepts a row subset). Body and block sites carry the residual stream
// [B, R, D] of the rows computed this forward. Every linear runs through the ops under its
// checkpoint name.
//
// block_size > 0 (cachelab's block-diffusion variant, Fast-dLLM v2's attention): the prompt
// (Cond::token_state's kTokenPrompt positions; none without token states) is block 0 and the
// generation is cut into
// blocks of block_size from the prompt's end; a position attends to its own block and the
// blocks before it (AttnCall::order: the block index), so a forward computes positions up to
// the end of the block holding block_end - 1 only, and finished blocks' keys and values never
// change.
//
// topological (cachelab's reading of WeDLM, Liu et al. 2025): causal attention over the order
// observed positions (prompt and decoded tokens, left to right), then masked ones (left to
// right), which is what WeDLM's topological reordering computes with a standard causal kernel;
// RoPE stays at each token's own position. A masked position sees every observed one and the
// masked ones before it; an observed one sees the observed ones before it, so the leading run
// of observed positions has final keys and values (SeqForward::settled: an exact prefix
// cache), and masked positions after the last observed one and after block_end - 1 are seen by
// nothing the forward returns: the forward stops there. Which positions are observed is read
// from the tokens (MASK or not), so training needs no token states.
//
// tidar = k (cachelab's reading of TiDAR, Liu et al. 2025): tokens (not MASK) attend causally
// and their outputs are trained as next-token predictions (the AR part); MASK tokens at
// consecutive positions (Cond::positions, RoPE; undefined = the index) form blocks of k (a run
// is cut every k) that see the tokens before their first position and their own block,
// bidirectionally (the diffusion drafts), and are seen by nothing else. Several blocks may cover the same positions (TiDAR's pre-drafts,
// one per acceptance length). Positions < Cond::context are settled (the committed prefix).
//
// vision_tokens = N (cachelab's small vision-language models, LaViDa-shaped): the first N
// positions are visual tokens; the input at position p < N is its token's embedding (the
// tasks' IMAGE id) plus vision_proj (a [D, vision_dim] linear, no bias) of Cond::embeddings[:,
// p], the image's p-th patch. No vision encoder: the projector and the blocks learn one.
//
// Cond::soft_tokens (dInfer's iteration smoothing): at a MASK position the input embedding is
// (1 - sum_v w_v) x MASK's + sum_v w_v x token v's; elsewhere the weights are ignored.
//
// K/V caches: forward follows the sequence protocol of framework/ops.h (Ops::seq_begin with
// the context, block end, token states and step; Ops::seq_rows before every block and before
// the head; AttnCall positions = the rows, RoPE at each row's own position per sample). FLOPs
// are passed per call from the rows R computed and the L keys attended; the site table holds
// those of a full forward of max_sequence_length tokens.
#pragma once
#include <memory>
#include <string>

#include "framework/backbone.h"
#include "models/masked_lm.h"

namespace cachelab {

struct LladaOptions {
  // Either a public config.json (relative to the project root), whose values then decide the
  // architecture, or the explicit keys below (defaults: LLaDA-8B's).
  std::string config;
  int d_model = 4096;
  int n_layers = 32;
  int n_heads = 32;
  int mlp_hidden_size = 12288;
  int vocab_size = 126464;  // embedding rows = logits columns (config.json's embedding_size)
  int mask_token_id = 126336;
  double rope_theta = 500000.0;
  double rms_norm_eps = 1e-5;
  int max_sequence_length = 4096;
  // A .safetensors file or a sharded checkpoint's model.safetensors.index.json (shards next
  // to it), relative to the project root; "" = random init. bf16 / f16 / f32 tensors are
  // converted to the model's dtype.
  std::string weights;
  int64_t init_seed = 0;
  int block_size = 0;  // block-causal attention over blocks of this many tokens; 0 = bidirectional
  bool topological = false;  // WeDLM's causal attention over the topological order
  int tidar = 0;             // TiDAR's hybrid attention: causal tokens, MASK blocks of this many; 0 = off
  int vision_tokens = 0;     // a vision-language model: visual tokens at the sequence's start; 0 = text only
  int vision_dim = 49;       // the width of each visual token's input (a 7 x 7 patch)

  template <class V>
  void fields(V& v) {
    v("config", config, "public config.json (relative to the project root); when set, its values decide the "
                        "architecture and the keys below must be left at their defaults or agree with it");
    v("d_model", d_model, "token width");
    v("n_layers", n_layers, "number of transformer blocks");
    v("n_heads", n_heads, "attention heads (keys and values have as many)");
    v("mlp_hidden_size", mlp_hidden_size, "SwiGLU hidden width");
    v("vocab_size", vocab_size, "embedding rows = logits columns (config.json's embedding_size), MASK included");
    v("mask_token_id", mask_token_id, "the MASK token, an id inside the vocabulary");
    v("rope_theta", rope_theta, "RoPE base");
    v("rms_norm_eps", rms_norm_eps, "RMSNorm epsilon");
    v("max_sequence_length", max_sequence_length, "longest sequence (prompt + generation), in tokens");
    v("weights", weights, "a .safetensors file or a model.safetensors.index.json of shards (relative to the "
                          "project root); empty = random init");
    v("init_seed", init_seed, "seed of the random initialisation");
    v("block_size", block_size, "block-causal attention (Fast-dLLM v2's block diffusion): the prompt is block 0, "
                                "then blocks of this many tokens; a position sees its own and earlier blocks. "
                                "0 = bidirectional, as LLaDA", 0);
    v("topological", topological, "WeDLM's attention (topological reordering): causal over the order observed "
                                  "positions left to right, then masked ones, RoPE at each token's own position; "
                                  "a masked position sees every observed one and the masked ones before it, an "
                                  "observed one the observed ones before it. false = bidirectional, as LLaDA", false);
    v("tidar", tidar, "TiDAR's hybrid attention (Think in Diffusion, Talk in Autoregression) with draft blocks of this "
                      "many MASK tokens: tokens attend causally (their outputs are next-token predictions), MASK tokens "
                      "at consecutive positions (Cond::positions) form blocks of this many that see the tokens before "
                      "their first position and themselves; decode with the tidar pipeline. 0 = bidirectional, as LLaDA", 0);
    v("vision_tokens", vision_tokens, "a vision-language model: the first this many positions are an image's patches "
                                      "(Cond::embeddings, through the vision_proj linear, added to their tokens' "
                                      "embeddings); 0 = text only", 0);
    v("vision_dim", vision_dim, "vision-language model: the width of each visual token's input (patch x patch pixels)", 49);
  }
  template <class C>
  void check(C& c) const {
    c.require(d_model >= 1, "d_model", "must be >= 1");
    c.require(n_heads >= 1 && d_model % n_heads == 0 && (d_model / n_heads) % 2 == 0, "n_heads",
              "must divide d_model into heads of even width (RoPE rotates pairs)");
    c.require(n_layers >= 1, "n_layers", "must be >= 1");
    c.require(mlp_hidden_size >= 1, "mlp_hidden_size", "must be >= 1");
    c.require(vocab_size >= 2, "vocab_size", "must be >= 2");
    c.require(mask_token_id >= 0 && mask_token_id < vocab_size, "mask_token_id", "must be in [0, vocab_size)");
    c.require(rope_theta > 0, "rope_theta", "must be > 0");
    c.require(rms_norm_eps > 0, "rms_norm_eps", "must be > 0");
    c.require(max_sequence_length >= 2, "max_sequence_length", "must be >= 2");
    c.require(block_size >= 0, "block_size", "must be >= 0 (0 = bidirectional)");
    c.require(!topological || block_size == 0, "topological", "cannot be combined with block_size (pick one attention)");
    c.require(tidar >= 0, "tidar", "must be >= 0 (0 = off)");
    c.require(tidar == 0 || (block_size == 0 && !topological), "tidar",
              "cannot be combined with block_size or topological (pick one attention)");
    c.require(vision_tokens >= 0 && vision_tokens < max_sequence_length, "vision_tokens",
              "must be in [0, max_sequence_length) (0 = text only)");
    c.require(vision_dim >= 1, "vision_dim", "must be >= 1");
  }
};

// The architecture a config.json describes: `o` with the file's values. Throws, naming the
// file and key, on a missing or malformed field, on a setting this implementation does not
// compute (block_type other than llama, activation other than silu, GQA, biases, weight
// tying, ...), and on an explicit key of `o` that differs from both its default and the file.
LladaOptions llada_architecture(const LladaOptions& o);

class Llada final : public Backbone, public MaskedLm {
 public:
  static constexpr int kSiteModel = 0, kSiteBody = 1;
  static int block_site(int i) { return 2 + 3 * i; }

  explicit Llada(const LladaOptions& options);
  ~Llada() override;
  // x: [B, L] int64 token ids (L <= max_sequence_length); t is ignored. cond.context and
  // cond.block_end (-1 = L) select the positions [context, block_end) whose logits are
  // returned: [B, block_end - context, V] float32. Without a K/V cache every position is
  // computed, as the reference does.
  at::Tensor forward(const at::Tensor& x, const at::Tensor& t, const Cond& cond, Hooks& hooks) override;
  const std::vector<Site>& sites() const override { return sites_; }
  const std::vector<LinearRef>& linears() const override { return linears_; }
  std::vector<int64_t> sample_shape() const override { return {int64_t(arch_.max_sequence_length)}; }
  // MASK tokens of max_sequence_length (int64, on options' device): what warm-up passes see.
  at::Tensor example_input(int64_t batch, const at::TensorOptions& options) const override;
  std::vector<std::pair<std::string, at::Tensor>> named_tensors() override { return params_; }
  std::vector<at::Tensor> trainable_parameters() override;
  // A .safetensors file or a model.safetensors.index.json (its shards, one at a time).
  void load(const std::string& path) override;
  void save(const std::string& path, const std::vector<std::pair<std::string, std::string>>& metadata) override;
  int64_t num_parameters() override;
  void to(at::Device device, at::ScalarType dtype) override;

  int64_t vocab_size() const override { return arch_.vocab_size; }
  int64_t mask_id() const override { return arch_.mask_token_id; }
  int64_t max_length() const override { return arch_.max_sequence_length; }
  int64_t block_size() const override { return arch_.block_size; }
  int64_t tidar_block() const override { return arch_.tidar; }
  bool soft_inputs() const override { return true; }
  int64_t visual_tokens() const override { return arch_.vision_tokens; }
  int64_t visual_dim() const override { return arch_.vision_tokens > 0 ? arch_.vision_dim : 0; }
  SequenceKind sequence_kind() const override {
    return arch_.block_size > 0 ? SequenceKind::BlockCausal
           : arch_.topological  ? SequenceKind::Topological
           : arch_.tidar > 0    ? SequenceKind::Tidar
                                : SequenceKind::Bidirectional;
  }
  const LladaOptions& architecture() const { return arch_; }  // after config.json

 private:
  struct Layer {
    at::Tensor attn_norm, ff_norm;
    int q = 0, k = 0, v = 0, out = 0, ff_proj = 0, up = 0, ff_out = 0;  // linear ids
  };
  double attn_flops(double R, double Nk) const;  // one sample: R rows computed, Nk keys
  double mlp_flops(double R) const;
  double model_flops(double O) const;  // the head over O rows
  double visual_flops(const at::Tensor& rows) const;  // vision_proj over the visual ones of `rows` [B, R]
  // What the attention of a forward needs beyond the rows: each position's rank and group
  // (AttnCall::order, group; undefined = bidirectional) and its RoPE position (undefined =
  // its index), all [B or 1, L] int64.
  struct Layout {
    at::Tensor order, group, positions;
  };
  // The attention layout of tokens x [B, L] (cond's context, positions) for outputs up to `end`:
  // block-causal, topological or TiDAR (undefined for bidirectional); sets Lc (the forward stops
  // there: no position before `end` sees a later one) and settled (positions with final K/V).
  Layout attention_layout(const at::Tensor& x, const Cond& cond, int64_t end, int64_t& Lc, int64_t& settled) const;
  // Block i over the rows `rows` [B, R] (residual stream h [B, R, D]), attending to `keys`
  // positions (for the FLOPs).
  at::Tensor block(int i, const at::Tensor& h, const at::Tensor& rows, int64_t keys, const Layout& layout, Hooks& hooks);

  LladaOptions options_, arch_;
  std::vector<std::pair<std::string, at::Tensor>> params_;
  std::vector<Site> sites_;
  std::vector<LinearRef> linears_;
  std::vector<Layer> layers_;
  at::Tensor wte_, ln_f_;
  int head_ = 0;
  int vision_ = -1;  // the vision_proj linear (vision-language models), else -1
};

}  // namespace cachelab
