// The decoder of Stable Diffusion's KL autoencoder (AutoencoderKL; sd-vae-ft-ema / -mse, the
// VAE DiT and PixArt decode with): latents -> images in [-1, 1], computed as the reference
// ldm `Decoder` (CompVis) and diffusers' `AutoencoderKL.decode`:
//   z / scaling -> post_quant_conv (1x1) -> conv_in -> mid (resnet, single-head attention,
//   resnet) -> per resolution, lowest first: num_res_blocks + 1 resnets, then a nearest 2x
//   upsample + 3x3 conv except at the top -> GroupNorm(32), SiLU, conv_out.
// Resnets: GroupNorm(32, eps 1e-6), SiLU, conv 3x3, GroupNorm, SiLU, conv 3x3, plus the input
// (through a 1x1 conv when the width changes).
//
// Weights load under any of the three published layouts (detected from the names; encoder
// tensors are ignored, a `first_stage_model.` prefix of a full SD checkpoint is dropped):
//   CompVis     decoder.up.{i}.block.{j}.nin_shortcut, decoder.mid.attn_1.{q,k,v,proj_out} (1x1 convs)
//   diffusers   decoder.up_blocks.{n-1-i}.resnets.{j}.conv_shortcut, mid_block.attentions.0.{to_q,
//               to_k, to_v, to_out.0} (linears), conv_norm_out
//   diffusers before 0.15: the same with attentions.0.{query, key, value, proj_attn}
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <string>
#include <vector>

#include "framework/decoder.h"

namespace cachelab {

struct SafetensorsFile;

struct SdVaeOptions {
  int ch = 128;                          // width at the top resolution
  std::vector<int> ch_mult = {1, 2, 4, 4};  // width multipliers, top resolution first
  int num_res_blocks = 2;                // the decoder has one more per resolution
  int z_channels = 4;
  int out_channels = 3;
  double scaling = 0.18215;              // latents are divided by this before decoding (DiT, SD 1.x)
};

// The decoder shape a weights file holds (any layout): widths per resolution from the first
// resnet of each, res blocks per resolution, latent and output channels. SD's VAE gives
// the defaults above. Throws when the file holds no decoder.
SdVaeOptions sd_vae_options_of(const SafetensorsFile& file, const std::string& path);

class SdVaeDecoder {
 public:
  explicit SdVaeDecoder(const SdVaeOptions& o = {});
  // Reads a safetensors file in any of the layouts above; every decoder tensor must be present
  // with the shape the options imply. Returns the layout found ("compvis", "diffusers",
  // "diffusers-legacy-attention").
  std::string load(const std::string& path);
  std::string load(const SafetensorsFile& file, const std::string& path);  // a file already read
  // latents [B, z, h, w] (as the diffusion model samples them, before / scaling) -> images
  // [B, out, 8h, 8w] in about [-1, 1].
  at::Tensor decode(const at::Tensor& latents) const;
  // The tensors the decoder expects, by their CompVis names, and their shapes.
  std::map<std::string, std::vector<int64_t>> expected_shapes() const;

 private:
  at::Tensor resnet(const at::Tensor& x, const std::string& prefix) const;
  at::Tensor attention(const at::Tensor& x, const std::string& prefix) const;
  const at::Tensor& w(const std::string& name) const;
  SdVaeOptions o_;
  std::map<std::string, at::Tensor> weights_;  // CompVis names
};

// The decoder `sd_vae` (framework/decoder.h): `decoder: {type: sd_vae, weights: FILE}` in an
// experiment scores a latent model's runs on images. The shape is read from the file.
struct SdVaeComponentOptions {
  std::string weights;  // any of the three layouts, relative to the project root
  int batch = 8;        // latents per decode
  template <class V>
  void fields(V& v) {
    v("weights", weights, "SD VAE weights (sd-vae-ft-ema / -mse, diffusers or CompVis layout, safetensors)");
    v("batch", batch, "latents decoded at a time");
  }
  template <class C>
  void check(C& c) const {
    c.require(!weights.empty(), "weights", "is required (the VAE's diffusion_pytorch_model.safetensors; docs/full-size.md)");
    c.require(batch >= 1, "batch", "must be >= 1");
  }
};

class SdVae final : public Decoder {
 public:
  explicit SdVae(const SdVaeComponentOptions& o);
  at::Tensor decode(const at::Tensor& latents) override;

 private:
  int batch_;
  SdVaeDecoder vae_;
};

// Images in [-1, 1] [B, C, H, W] -> uint8 [B, H, W, C] exactly as DiT's sample_ddp.py stores
// them: clamp(127.5 x + 128, 0, 255) truncated to uint8.
at::Tensor to_uint8_nhwc(const at::Tensor& images);

}  // namespace cachelab
