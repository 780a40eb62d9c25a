// The `image` pipeline (x_T ~ N(0, I), one denoiser call per sampler step) and the `cfg`
// guidance component.
#pragma once
#include <string>

#include "framework/pipeline.h"

namespace cachelab {

struct ImagePipelineOptions {
  template <class V>
  void fields(V&) {}
};

class ImagePipeline final : public Pipeline {
 public:
  explicit ImagePipeline(const ImagePipelineOptions&) {}
  int num_steps(const Sampler* sampler) const override;
  int64_t timestep(const Sampler* sampler, int i) const override;
  at::Tensor run(const PipelineInputs& in, StepDriver& driver) const override;
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
