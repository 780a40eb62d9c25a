// The ops layer: every linear layer and every attention of a backbone goes through one
// interface, named by checkpoint name (`blocks.3.attn.qkv`), so that quantizers and K/V
// caches plug in without the model knowing (as llama.cpp routes every matmul through one
// builder). An Ops implementation may wrap another (`inner`): a fake quantizer around a
// K/V cache around the dense ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <functional>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "framework/site.h"

namespace cachelab {

class RunContext;
class Calibrator;  // framework/layer.h

// What a linear layer does in its model, declared by the model: selections (a quantizer's
// `layers`, `temporal_layers`) name roles rather than parse checkpoint names, so one setting
// means the same on DiT, PixArt, SD's U-Net and LLaDA.
//   qkv, proj              self-attention's input projections (fused or q / k / v) and output
//   cross_q, cross_kv, cross_proj   cross-attention's query, key / value and output projections
//   fc1, fc2               the MLP's input side (gate and up of a gated MLP) and output
//   modulation             the timestep's projection into a block (adaLN, a U-Net block's emb)
//   time_embed             the timestep embedding's MLP
//   embed                  input and condition embeddings (patches, caption projection)
//   head                   the output projection (final layer, LM head)
enum class LinearRole : uint8_t { Other, Qkv, Proj, CrossQ, CrossKv, CrossProj, Fc1, Fc2, Modulation, TimeEmbed, Embed, Head };
const char* linear_role_name(LinearRole role);
// The role called `name`; false when `name` names none.
bool linear_role_from_name(const std::string& name, LinearRole& role);
const std::vector<std::string>& linear_role_names();

// One linear layer of a backbone: y = x W^T + b. weight [out, in], bias [out] or undefined.
struct LinearRef {
  std::string name;  // checkpoint name without `.weight`
  at::Tensor weight, bias;
  int block = -1;    // block (layer) index, -1 outside the block stack
  LinearRole role = LinearRole::Other;
};

// One attention call. q [B, H, Nq, d], k and v [B, H, Nk, d]; returns [B, H, Nq, d].
struct AttnCall {
  int layer = 0;             // attention layer index (the block)
  at::Tensor mask;           // additive mask broadcastable to [B, H, Nq, Nk], or undefined
  // Sequence models (K/V caches): int64 CPU positions of the queries [B, Nq] and of k and v
  // [B, Nk], ascending per sample, or undefined. A sequence model's self-attention passes
  // the rows it computes (SeqPlan / Ops::seq_rows) as both.
  at::Tensor q_positions;
  at::Tensor kv_positions;
  // Sequence models whose attention is not bidirectional: int64 CPU [B or 1, L], a rank of
  // every position the model computes (SeqForward::length); a query sees the keys whose rank
  // is <= its own (looked up at q_positions and kv_positions). Block-causal (llada's
  // block_size, Fast-dLLM v2): the block index; topological (WeDLM): the position in the
  // order observed positions left to right, then masked ones. Undefined = every key. It
  // travels with the positions through a K/V cache, which may change the keys.
  at::Tensor order;
  // With `order`: int64 CPU [B or 1, L], a group of every position; a key of group g > 0 is
  // seen only by queries of its own group (TiDAR's MASK blocks: bidirectional inside, unseen by
  // the rest); group 0 keys by every query `order` lets see. Undefined = all group 0.
  at::Tensor group;
};

// The additive mask of a call over its keys: `mask` plus -inf where a key's rank in `order`
// exceeds its query's or its group hides it; undefined when the call has neither.
// [B or 1, 1, Nq, Nk].
at::Tensor attention_mask(const AttnCall& call, const at::Tensor& q);

// The state of each position of a sequence as the decoder sees it (Cond::token_state,
// SeqForward::state): int32 codes, >= 0 = decoded (unmasked) at that step of the run.
constexpr int32_t kTokenPrompt = -1;  // given: the prompt, or a clean context frame
constexpr int32_t kTokenMasked = -2;  // still MASK

// What a sequence model tells its ops before a forward (Ops::seq_begin): everything a K/V
// cache decides from. Tensors are CPU.
struct SeqForward {
  int64_t batch = 0, length = 0;  // B and L: positions (tokens; frames for video)
  int64_t context = 0;            // positions < context are finished (Cond::context)
  int64_t block_end = 0;          // the model returns outputs for positions [context, block_end)
  at::Tensor tokens;              // [B, L] int64 token ids (masked LMs), or undefined
  at::Tensor state;               // [B, L] int32 token states, or undefined
  at::Tensor confidence;          // [B, L] float: the decoder's confidence at each masked position
                                  // after the previous forward (NaN elsewhere), or undefined
  int num_layers = 0;
  int step = 0;                   // the run's step (StepIndex::i)
  int64_t visual = 0;             // positions < visual are an image's tokens (a vision-language model); 0 = none
  // The model's attention (Backbone::sequence_kind). Causal: a query sees positions <= its
  // own only (AR video). BlockCausal and Topological (AttnCall::order): positions < settled
  // see no later position, so their keys and values are final (finished blocks; the leading
  // run of observed positions), and the model computes positions < length only (the end of
  // the block holding block_end - 1; the last position a position < block_end sees), so
  // length grows as decoding goes on.
  SequenceKind kind = SequenceKind::Bidirectional;
  int64_t settled = 0;
  // The value projection of layer `layer` for hidden states x [B, N, D] (that layer's input,
  // before its attention norm), as its attention computes it: [B, H, N, d]. For caches that
  // verify rows by their values (dLLM-Cache's V-verify; the caller counts its FLOPs through
  // RunContext::add_flops). Unset when the model offers none.
  std::function<at::Tensor(int layer, const at::Tensor& x)> values;
};

// The ops' answer: which positions the model computes at its first layer, per sample, and
// which keys a query may see. The ops supplies the keys and values of every other position
// in each attention call (Ops::attention), and may change the rows before any later layer
// (Ops::seq_rows).
struct SeqPlan {
  at::Tensor rows;      // int64 [B, R] CPU, ascending per sample; undefined = all L positions
  int64_t window = -1;  // a query at position p sees keys at positions >= p - window only; -1 = all
  int64_t sink = 0;     // with a window: keys at positions < sink stay visible to every query as well
};

class Ops {
 public:
  virtual ~Ops() = default;
  // Binds to a backbone's linear table and a run (extras, steps). Resets state.
  virtual void begin_run(const std::vector<LinearRef>& linears, RunContext* ctx);
  virtual void begin_step(const StepIndex& step);
  virtual void end_step();
  virtual at::Tensor linear(int id, const at::Tensor& x);
  virtual at::Tensor attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v);
  // K/V caches. A sequence model calls seq_begin once per forward, before its layers; it
  // computes the rows of the answer (all positions when undefined), passes their positions
  // with every attention call, and counts the FLOPs of what it computes. Default: the inner
  // ops' answer, else everything.
  virtual SeqPlan seq_begin(const SeqForward& f);
  // Before layer `layer` (0 .. num_layers; num_layers = before the final norm and head) with
  // the rows [B, R] it is about to compute and their residual stream x [B, R, D]: the ops may
  // replace both, adding rows whose hidden states it kept or dropping rows (every sample
  // keeps the same count R'). Outputs cover [context, block_end): a position the final rows
  // lack gets a zero output (rows_between). Default: the inner ops', else unchanged.
  virtual void seq_rows(int layer, at::Tensor& rows, at::Tensor& x);
  // For the model's FLOPs count: how many keys each query of layer `layer`'s coming attention
  // call is scored against, when the model would score all `keys` (a cache that reuses part
  // of the attention, as FlashBlock does, scores fewer). Default: the inner ops', else keys.
  virtual double attended_keys(int layer, double keys) const;
  // An ops fitted by `cachelab calibrate` (a quantizer's scales) returns its calibrator;
  // the default asks the inner ops.
  virtual Calibrator* calibrator() { return inner_ ? inner_->calibrator() : nullptr; }
  void set_inner(std::unique_ptr<Ops> inner) { inner_ = std::move(inner); }
  Ops* inner() const { return inner_.get(); }

 protected:
  const std::vector<LinearRef>* linears_ = nullptr;
  std::unique_ptr<Ops> inner_;
};

// For K/V caches when they bind: throws, naming `who`, when the run's backbone
// (ctx->sequence) is not one of `serves`; `what` names the models it serves. No check
// without a run (ctx null).
void require_sequence(const char* who, const RunContext* ctx, std::initializer_list<SequenceKind> serves,
                      const char* what);

// Whether a layer-selection list picks linear `l` (the `layers` key of every quantizer): `all`,
// `blocks` (every linear inside a block), a role (`qkv`, `fc1`, `modulation`, ...: LinearRole),
// or else a substring of the checkpoint name (one layer by name).
bool linear_matches(const LinearRef& l, const std::vector<std::string>& patterns);

// Sequence models' row bookkeeping. every_row: int64 [B, L] CPU, all positions per sample.
at::Tensor every_row(int64_t batch, int64_t length);
// Of x [B, R, ...] holding positions `rows` [B, R] (ascending per sample; undefined = all),
// the rows at positions [begin, end), in order: [B, end - begin, ...]; a position the rows
// lack reads zeros, and `present` (if given) receives [B, end - begin] bool on x's device:
// which positions were there. A masked LM returns zero logits (a uniform prediction) at the
// positions its rows lack, so a cache may leave masked positions uncomputed (d2Cache).
at::Tensor rows_between(const at::Tensor& x, const at::Tensor& rows, int64_t begin, int64_t end,
                        at::Tensor* present = nullptr);

// x W^T + b exactly as torch::nn::Linear computes it.
at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// softmax(q k^T / sqrt(d) + mask) [B, H, Nq, Nk]: the attention weights (mask undefined = none).
at::Tensor attention_weights(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mask);

// attention_weights(q, k, mask) v, written out (LibTorch 1.13 has no fused SDPA).
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

// The dense, full-precision ops: at::linear and dense_attention.
class DenseOps final : public Ops {};

}  // namespace cachelab
