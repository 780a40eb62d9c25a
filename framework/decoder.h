// Latents -> images, for scoring: when an experiment has `decoder:` (a registered decoder,
// e.g. {type: sd_vae, weights: ...}), every run's final samples and its reference's are
// decoded before the metrics see them, so a latent model (DiT-XL/2, PixArt-α, SD) is scored
// on images as its paper scores it. The samples stored in the run file stay latents.
#pragma once
#include <ATen/core/Tensor.h>

namespace cachelab {

class Decoder {
 public:
  virtual ~Decoder() = default;
  // latents [N, ...] as the sampler ends -> images [N, C, H, W] in about [-1, 1].
  virtual at::Tensor decode(const at::Tensor& latents) = 0;
};

}  // namespace cachelab
