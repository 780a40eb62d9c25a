// Static layer skipping (Goel et al., 2026, "Skip to the Good Part"): the blocks named in
// `layers` are never computed; each passes its input on unchanged (the residual stream
// bridges the gap), at every step, for every token. No K/V sharing and no training: a
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
#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct LayerSkipOptions {
  std::vector<int> layers;  // block indices never computed
  template <class V>
  void fields(V& v) {
    v("layers", layers, "block indices that are never computed (their input passes on unchanged); [] = none, "
                        "which profiles every block's input-output cosine similarity");
  }
  template <class C>
  void check(C& c) const {
    for (int l : layers) c.require(l >= 0, "layers", "block indices must be >= 0");
  }
};

class LayerSkipPolicy final : public CachePolicy {
 public:
  explicit LayerSkipPolicy(const LayerSkipOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  Tensors at(SiteCall& call, const Next& next) override;

 private:
  LayerSkipOptions o_;
  std::vector<int> kind_;  // per site: 0 = not a block, 1 = computed block, 2 = skipped block
  int cosine_extra_ = -1;
};

}  // namespace cachelab
