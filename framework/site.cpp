#include "framework/site.h"

#include <algorithm>

#include <ATen/ATen.h>

#include "framework/error.h"
#include "framework/ops.h"

namespace cachelab {
namespace {

const char* const kKindNames[] = {"model", "body", "block", "attn", "mlp", "branch", "kv", "other"};

}  // namespace

const char* site_kind_name(SiteKind k) { return kKindNames[size_t(k)]; }

SiteKind site_kind_from_name(const std::string& name) {
  for (size_t i = 0; i < sizeof(kKindNames) / sizeof(kKindNames[0]); ++i)
    if (name == kKindNames[i]) return SiteKind(i);
  CL_FAIL("unknown site kind `" << name << "`; kinds: model, body, block, attn, mlp, branch, kv, other");
}

const char* decision_name(Decision d) {
  switch (d) {
    case Decision::Compute: return "compute";
    case Decision::Reuse: return "reuse";
    case Decision::Predict: return "predict";
    case Decision::Skipped: return "skipped";
    case Decision::Partial: return "partial";
    case Decision::Blend: return "blend";
  }
  return "?";
}

at::Tensor Hooks::at(int site, const at::Tensor& input, const SiteFn1& compute) {
  return at(site, Tensors{input}, [&compute](const SiteCall& call) -> Tensors { return {compute(call.inputs[0])}; })[0];
}

PassThroughHooks::PassThroughHooks(const std::vector<LinearRef>& linears) : ops_(std::make_unique<DenseOps>()) {
  ops_->begin_run(linears, nullptr);
}
PassThroughHooks::~PassThroughHooks() = default;

Tensors PassThroughHooks::at(int site, Tensors inputs, const SiteFn& compute) {
  SiteCall call;
  call.site = site;
  call.inputs = std::move(inputs);
  SiteLog log;
  call.log = &log;
  return compute(call);
}

int find_site(const std::vector<Site>& sites, const std::string& name) {
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].name == name) return int(i);
  return -1;
}

int find_site(const std::vector<Site>& sites, SiteKind kind) {
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].kind == kind && sites[i].stream == 0) return int(i);
  return -1;
}

int main_stream_blocks(const std::vector<Site>& sites, std::vector<int>& block_of) {
  block_of.assign(sites.size(), -1);
  int depth = 0;
  for (size_t i = 0; i < sites.size(); ++i)
    if (sites[i].kind == SiteKind::Block && sites[i].stream == 0) {
      block_of[i] = sites[i].block;
      depth = std::max(depth, sites[i].block + 1);
    }
  return depth;
}

at::Tensor token_change(const at::Tensor& x, const at::Tensor& before) {
  const std::vector<int64_t> dims = {0, 2};
  return ((x - before).abs().sum(dims) / before.abs().sum(dims).clamp_min(1e-12)).to(at::kFloat);
}

}  // namespace cachelab
