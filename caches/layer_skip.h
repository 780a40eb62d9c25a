// Static layer skipping (Goel et al., 2026, "Skip to the Good Part"): the blocks named in
// `layers` are never computed; each passes its input on unchanged (the residual stream
// bridges the gap), at every step, for every token. With `parts: [attn]`, `[mlp]` or both,
// only those sub-layers of the named blocks are skipped, as diffusers' LayerSkip does with
// skip_attention / skip_ff: the branch adds nothing to the residual stream. No K/V sharing and no training: a
// skipped block's attention is simply not called, so a K/V cache under it holds nothing for
// that layer. Works on any backbone whose blocks are sites (DiT, U-Net-free transformers,
// llada, tiny_mdlm).
//
// The paper picks the layers from a representational analysis: blocks whose output is most
// similar to their input (a plateau of high cosine similarity, early in native diffusion
// LMs) are redundant. Every block this layer computes logs that similarity per step
// (`block_io_cosine`: the mean over tokens of cos(input, output)), so a run with `layers: []`
// is the profile that picks them.
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct LayerSkipOptions {
  std::vector<int> layers;                   // block indices never computed
  std::vector<std::string> parts = {"block"};  // what of them: the whole block, or its attn / mlp sub-layers
  template <class V>
  void fields(V& v) {
    v("layers", layers, "block indices that are never computed (their input passes on unchanged); [] = none, "
                        "which profiles every block's input-output cosine similarity");
    v("parts", parts,
      "what of each named block is skipped: block (the whole block), or attn and/or mlp (diffusers' LayerSkip "
      "skip_attention / skip_ff: the sub-layer's branch adds nothing, the residual passes on)",
      std::vector<std::string>{"block"});
  }
  template <class C>
  void check(C& c) const {
    for (int l : layers) c.require(l >= 0, "layers", "block indices must be >= 0");
    c.require(!parts.empty(), "parts", "must name block, attn or mlp");
    c.each_one_of("parts", parts, {"block", "attn", "mlp"});
    c.require(parts.size() == 1 || std::find(parts.begin(), parts.end(), "block") == parts.end(), "parts",
              "block skips the whole block: give it alone");
  }
};

class LayerSkipPolicy final : public CachePolicy {
 public:
  explicit LayerSkipPolicy(const LayerSkipOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  LayerSkipOptions o_;
  std::vector<int> kind_;  // per site: 0 = not a block, 1 = computed block, 2 = skipped block, 3 = skipped sub-layer
  int cosine_extra_ = -1;
};

}  // namespace cachelab
