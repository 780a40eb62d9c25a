// The `image` pipeline (x_T ~ N(0, I), one denoiser call per sampler step) and the `cfg`
// guidance component.
#pragma once
#include <string>

#include "framework/pipeline.h"

namespace cachelab {

// A prompt file (text-to-image backbones: pixart, ...) is a safetensors file of text-encoder
// outputs, any length L and width E (tools/t5_embed.py writes PixArt's T5 features):
//   embeddings           F32 [N, L, E]  one row per prompt
//   mask                 [N, L]         optional; nonzero = a real token (default: all real)
//   negative_embeddings  F32 [M, L, E]  optional; the unconditional half of guidance (else
//                                       the backbone's own null, e.g. PixArt's null caption)
//   negative_mask        [M, L]         optional
//   ids                  [N, L]         optional token ids, not read (cachelab encode-prompts writes them)
// Sample i of a run uses prompt i % N (and negative i % M) as Cond::embeddings /
// embeddings_mask / negative_embeddings / negative_mask.
struct ImagePipelineOptions {
  std::string prompts;  // prompt file (relative to the project root); "" = class labels only
  template <class V>
  void fields(V& v) {
    v("prompts", prompts, "safetensors file of text embeddings (embeddings [N, L, E], optional mask, "
                          "negative_embeddings, negative_mask); sample i uses prompt i % N");
  }
};

class ImagePipeline final : public Pipeline {
 public:
  explicit ImagePipeline(const ImagePipelineOptions& o);
  int num_steps(const Sampler* sampler) const override;
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
  Cond condition(const Backbone& backbone, int64_t start, int64_t n) const override;

 private:
  at::Tensor embeddings_, mask_, negative_, negative_mask_;  // the prompt file's tensors, or undefined
};

// Classifier-free guidance: eps = uncond + scale (cond - uncond), with the conditional and
// the null-condition halves in one batch. `channels` picks which output channels are
// guided; the others are taken from the conditional half:
//   eps  (default) the prediction channels (the sample's C; a learned variance is not guided)
//   all            every output channel
//   first3         the first 3 channels, literally as the reference DiT's forward_with_cfg
struct CfgGuidanceOptions {
  std::string channels = "eps";
  template <class V>
  void fields(V& v) {
    v("channels", channels, "guided output channels: eps (the sample's channels) | all | first3 (reference DiT)");
  }
  template <class C>
  void check(C& c) const {
    c.one_of("channels", channels, {"eps", "all", "first3"});
  }
};

class CfgGuidance final : public Guidance {
 public:
  explicit CfgGuidance(const CfgGuidanceOptions& o) : o_(o) {}
  at::Tensor eval(Backbone& bb, const at::Tensor& x, const at::Tensor& t, const Cond& cond, double scale,
                  Hooks& hooks) const override;

 private:
  CfgGuidanceOptions o_;
};

}  // namespace cachelab
