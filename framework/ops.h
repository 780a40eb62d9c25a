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
  at::Tensor q_positions;    // int64 [Nq] sequence positions of the queries (K/V caches), or undefined
  at::Tensor kv_positions;   // int64 [Nk] sequence positions of k and v, or undefined
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
  // An ops layer fitted by `cachelab calibrate` (a quantizer) returns its calibrator;
  // wrappers forward to their inner ops.
  virtual Calibrator* calibrator() { return inner_ ? inner_->calibrator() : nullptr; }
  // FLOPs the ops saved or added relative to dense ops, for the recorder (e.g. a K/V
  // cache that skipped projections reports nothing here: the model skips the rows).
  void set_inner(std::unique_ptr<Ops> inner) { inner_ = std::move(inner); }
  Ops* inner() const { return inner_.get(); }

 protected:
  const std::vector<LinearRef>* linears_ = nullptr;
  std::unique_ptr<Ops> inner_;
};

// x W^T + b exactly as torch::nn::Linear computes it.
at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias);

// softmax(q k^T / sqrt(d) + mask) v, written out (LibTorch 1.13 has no fused SDPA).
at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask);

// The dense, full-precision ops: at::linear and dense_attention.
class DenseOps final : public Ops {};

}  // namespace cachelab
