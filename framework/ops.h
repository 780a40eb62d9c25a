// The ops layer: every linear layer and every attention of a backbone goes through one
// interface, named by checkpoint name (`blocks.3.attn.qkv`), so that quantizers and K/V
// caches plug in without the model knowing (as llama.cpp routes every matmul through one
// builder). An Ops implementation may wrap another (`inner`): a fake quantizer around a
// K/V cache around the dense ops.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <string>
#include <vector>

#include "framework/site.h"

namespace cachelab {

class RunContext;
class Calibrator;  // framework/layer.h

// One linear layer of a backbone: y = x W^T + b. weight [out, in], bias [out] or undefined.
struct LinearRef {
  std::string name;  // checkpoint name without `.weight`
  at::Tensor weight, bias;
  int block = -1;    // block (layer) index, -1 outside the block stack
};

// One attention call. q [B, H, Nq, d], k and v [B, H, Nk, d]; returns [B, H, Nq, d].
struct AttnCall {
  int layer = 0;             // attention layer index (the block)
  at::Tensor mask;           // additive mask broadcastable to [B, H, Nq, Nk], or undefined
  at::Tensor q_positions;    // int64 [Nq] CPU sequence positions of the queries (K/V caches), or undefined
  at::Tensor kv_positions;   // int64 [Nk] CPU sequence positions of k and v, ascending, or undefined
};

// What a K/V cache supplies in the coming forward of a sequence model (Ops::kv_plan).
struct KvPlan {
  int64_t start = 0;    // the model computes positions >= start; the ops supplies the keys and
                        // values of earlier positions at every attention layer
  int64_t window = -1;  // a query at position p sees keys at positions >= p - window only; -1 = all
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
  // K/V caches. A sequence model calls this once per forward, before its layers, with the
  // number of leading positions that are finished context (Cond::context); the answer says
  // from which position on it must compute (the ops supplies the keys and values of the
  // earlier ones, visible to every query) and which keys a query may see, so the model
  // counts the FLOPs that really run. Without a cache: {0, -1}, compute everything.
  virtual KvPlan kv_plan(int64_t context);
  // An ops fitted by `cachelab calibrate` (a quantizer's scales) returns its calibrator;
  // the default asks the inner ops.
  virtual Calibrator* calibrator() { return inner_ ? inner_->calibrator() : nullptr; }
  void set_inner(std::unique_ptr<Ops> inner) { inner_ = std::move(inner); }
  Ops* inner() const { return inner_.get(); }

 protected:
  const std::vector<LinearRef>* linears_ = nullptr;
  std::unique_ptr<Ops> inner_;
};

// Whether a layer-selection list picks linear `l`: `blocks` = every linear inside a block,
// `all`, or a substring of the checkpoint name (the `layers` key of every quantizer).
bool linear_matches(const LinearRef& l, const std::vector<std::string>& patterns);

// x W^T + b exactly as torch::nn::Linear computes it.
at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// softmax(q k^T / sqrt(d) + mask) v, written out (LibTorch 1.13 has no fused SDPA).
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

// The dense, full-precision ops: at::linear and dense_attention.
class DenseOps final : public Ops {};

}  // namespace cachelab
