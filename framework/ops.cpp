#include "framework/ops.h"

#include <ATen/ATen.h>

#include <cmath>
#include <limits>
#include <utility>

#include "framework/error.h"
#include "framework/layer.h"

namespace cachelab {

namespace {

const std::vector<std::string> kRoleNames = {"other",  "qkv", "proj",       "cross_q",    "cross_kv", "cross_proj",
                                             "fc1",    "fc2", "modulation", "time_embed", "embed",    "head"};

}  // namespace

const char* linear_role_name(LinearRole role) { return kRoleNames[size_t(role)].c_str(); }

bool linear_role_from_name(const std::string& name, LinearRole& role) {
  for (size_t i = 0; i < kRoleNames.size(); ++i)
    if (kRoleNames[i] == name) {
      role = LinearRole(i);
      return true;
    }
  return false;
}

const std::vector<std::string>& linear_role_names() { return kRoleNames; }

bool linear_matches(const LinearRef& l, const std::vector<std::string>& patterns) {
  for (auto& s : patterns) {
    LinearRole role;
    if (s == "all") return true;
    if (s == "blocks" ? l.block >= 0
        : linear_role_from_name(s, role) ? l.role == role
                                         : l.name.find(s) != std::string::npos)
      return true;
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
  return dense_attention(q, k, v, attention_mask(call, q));
}

void require_sequence(const char* who, const RunContext* ctx, std::initializer_list<SequenceKind> serves,
                      const char* what) {
  if (!ctx) return;
  for (SequenceKind k : serves)
    if (k == ctx->sequence) return;
  const char* is = ctx->sequence == SequenceKind::None            ? "not a sequence model"
                   : ctx->sequence == SequenceKind::Bidirectional ? "bidirectional (a masked LM)"
                   : ctx->sequence == SequenceKind::BlockCausal   ? "block-causal (llada's block_size)"
                   : ctx->sequence == SequenceKind::Topological   ? "topological (WeDLM's causal attention: llada's topological)"
                   : ctx->sequence == SequenceKind::Tidar         ? "TiDAR's hybrid (llada's tidar)"
                                                                  : "causal (autoregressive video)";
  CL_FAIL(who << ": serves " << what << "; this backbone is " << is);
}

at::Tensor attention_mask(const AttnCall& call, const at::Tensor& q) {
  if (!call.order.defined()) return call.mask;
  CL_CHECK(call.q_positions.defined() && call.kv_positions.defined() && call.order.dim() == 2,
           "attention: order must be [B or 1, L] beside q_positions and kv_positions");
  // A per-position value [B or 1, L] at the queries' and the keys' positions: [B, Nq, 1], [B, 1, Nk].
  auto at_positions = [&](const at::Tensor& v) {
    auto all = v.to(at::kLong).expand({call.q_positions.size(0), v.size(1)});
    return std::make_pair(all.gather(1, call.q_positions.to(at::kLong)).unsqueeze(2),
                          all.gather(1, call.kv_positions.to(at::kLong)).unsqueeze(1));
  };
  const auto [qo, ko] = at_positions(call.order);
  auto seen = ko.le(qo);  // [B, Nq, Nk]
  if (call.group.defined()) {
    const auto [qg, kg] = at_positions(call.group);
    seen = seen & (kg.eq(0) | kg.eq(qg));
  }
  auto m = at::where(seen, 0.0f, -std::numeric_limits<float>::infinity()).unsqueeze(1).to(q.device(), q.scalar_type());
  return call.mask.defined() ? m + call.mask : m;
}

SeqPlan Ops::seq_begin(const SeqForward& f) { return inner_ ? inner_->seq_begin(f) : SeqPlan{}; }
void Ops::seq_rows(int layer, at::Tensor& rows, at::Tensor& x) {
  if (inner_) inner_->seq_rows(layer, rows, x);
}
double Ops::attended_keys(int layer, double keys) const { return inner_ ? inner_->attended_keys(layer, keys) : keys; }

at::Tensor every_row(int64_t batch, int64_t length) {
  return at::arange(length, at::kLong).unsqueeze(0).expand({batch, length}).contiguous();
}

at::Tensor rows_between(const at::Tensor& x, const at::Tensor& rows, int64_t begin, int64_t end, at::Tensor* present) {
  if (!rows.defined()) {
    if (present) *present = at::ones({x.size(0), end - begin}, x.options().dtype(at::kBool));
    return x.narrow(1, begin, end - begin);
  }
  const int64_t B = rows.size(0), n = end - begin;
  CL_CHECK(rows.size(1) > 0, "the K/V cache left no rows to compute");
  auto want = at::arange(begin, end, at::kLong).unsqueeze(0).expand({B, n}).contiguous();
  auto idx = at::searchsorted(rows.contiguous(), want).clamp_max(rows.size(1) - 1);
  auto there = rows.gather(1, idx).eq(want).to(x.device());  // [B, n]
  if (present) *present = there;
  idx = idx.to(x.device());
  std::vector<int64_t> shape = {B, n};
  auto view = idx, keep = there;
  for (int64_t d = 2; d < x.dim(); ++d) {
    shape.push_back(x.size(d));
    view = view.unsqueeze(-1);
    keep = keep.unsqueeze(-1);
  }
  auto out = x.gather(1, view.expand(shape));
  return there.all().item<bool>() ? out : out * keep.to(out.scalar_type());
}

at::Tensor attention_weights(const at::Tensor& q, const at::Tensor& k, const at::Tensor& mask) {
  auto scores = at::matmul(q, k.transpose(-2, -1)) * (1.0 / std::sqrt(double(q.size(-1))));
  if (mask.defined()) scores = scores + mask;
  return at::softmax(scores, -1);
}

at::Tensor dense_attention(const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, const at::Tensor& mask) {
  return at::matmul(attention_weights(q, k, mask), v);
}

}  // namespace cachelab
