#include "caches/layer_skip.h"

#include <ATen/ATen.h>

#include <algorithm>

#include "framework/error.h"

namespace cachelab {

void LayerSkipPolicy::begin_run(RunContext& ctx) {
  std::vector<int> block_of;
  const int depth = main_stream_blocks(*ctx.sites, block_of);
  CL_CHECK(depth > 0, "layer_skip: this backbone has no block sites to skip");
  for (int l : o_.layers)
    CL_CHECK(l < depth, "layer_skip: layers names block " << l << " but the backbone has blocks 0 .. " << depth - 1);
  kind_.assign(block_of.size(), 0);
  const bool whole = o_.parts == std::vector<std::string>{"block"};
  auto named = [&](int b) { return std::count(o_.layers.begin(), o_.layers.end(), b) > 0; };
  auto skipped_part = [&](const Site& s) {
    const char* part = s.kind == SiteKind::Attn ? "attn" : s.kind == SiteKind::Mlp ? "mlp" : nullptr;
    return part && s.stream == 0 && named(s.block) && std::count(o_.parts.begin(), o_.parts.end(), part) > 0;
  };
  int parts = 0;
  for (size_t i = 0; i < block_of.size(); ++i) {
    if (block_of[i] >= 0) kind_[i] = whole && named(block_of[i]) ? 2 : 1;
    if (!whole && skipped_part((*ctx.sites)[i])) kind_[i] = 3, ++parts;
  }
  CL_CHECK(whole || o_.layers.empty() || parts > 0,
           "layer_skip: the named blocks have no main-stream " << (o_.parts.size() == 1 ? o_.parts[0] : "attn or mlp")
                                                               << " site to skip");
  cosine_extra_ = ctx.declare_site_extra(
      "block_io_cosine", "1",
      "cosine similarity of a computed block's output with its input, averaged over tokens and samples (layer_skip's "
      "profile: the paper skips the most similar blocks)");
}

Tensors LayerSkipPolicy::at(SiteCall& call, const Next& next) {
  const int k = kind_[size_t(call.site)];
  if (k == 2 || k == 3) {
    call.log->decision = Decision::Reuse;  // the block's input stands in for its output; a sub-layer adds nothing
    const auto in = call.rows.defined() ? call.inputs[0].index_select(1, call.rows) : call.inputs[0];
    return {k == 2 ? in : at::zeros_like(in)};
  }
  Tensors out = next(call);
  if (k == 1 && call.log->extra && out[0].dim() == 3 && !call.rows.defined()) {
    const auto a = call.inputs[0].to(at::kFloat), b = out[0].to(at::kFloat);
    call.log->set_extra(cosine_extra_, at::cosine_similarity(a, b, -1).mean().item<double>());
  }
  return out;
}

}  // namespace cachelab
