#include "framework/ops.h"

#include <ATen/ATen.h>

#include <cmath>

namespace cachelab {

bool linear_matches(const LinearRef& l, const std::vector<std::string>& patterns) {
  for (auto& s : patterns) {
    if (s == "all") return true;
    if (s == "blocks" ? l.block >= 0 : l.name.find(s) != std::string::npos) return true;
  }
  return false;
}

void Ops::begin_run(const std::vector<LinearRef>& linears, RunContext* ctx) {
  linears_ = &linears;
  if (inner_) inner_->begin_run(linears, ctx);
}
void Ops::begin_step(const StepIndex& step) {
  if (inner_) inner_->begin_step(step);
}
void Ops::end_step() {
  if (inner_) inner_->end_step();
}

at::Tensor Ops::linear(int id, const at::Tensor& x) {
  if (inner_) return inner_->linear(id, x);
  const LinearRef& l = (*linears_)[size_t(id)];
  return dense_linear(x, l.weight, l.bias);
}

at::Tensor dense_linear(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias) {
  // As torch::nn::Linear computes it (the models were trained and checked that way): a
  // fused addmm for 2-D input, else matmul then the bias (which rounds differently from
  // at::linear's flattened addmm).
  if (x.dim() == 2 && bias.defined()) return at::addmm(bias, x, weight.t());
  auto out = x.matmul(weight.t());
  if (bias.defined()) out += bias;
  return out;
}

at::Tensor Ops::attention(const AttnCall& call, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
  if (inner_) return inner_->attention(call, q, k, v);
  return dense_attention(q, k, v, call.mask);
}

KvPlan Ops::kv_plan(int64_t context) { return inner_ ? inner_->kv_plan(context) : KvPlan{}; }

at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  auto scores = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(-1))));
  if (mask.defined()) scores = scores + mask;
  return at::matmul(at::softmax(scores, -1), v);
}

}  // namespace cachelab
