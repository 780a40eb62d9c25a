// Every backbone, sampler, pipeline and guidance, one line each.
#include "framework/registries.h"
#include "models/dit.h"
#include "models/dpm_solver.h"
#include "models/lm_decoders.h"
#include "models/image_pipeline.h"
#include "models/inception.h"
#include "models/learn2pd.h"
#include "models/lenet.h"
#include "models/llada.h"
#include "models/mdlm_pipeline.h"
#include "models/tidar_pipeline.h"
#include "models/mdlm_text.h"
#include "models/plms.h"
#include "models/pixart.h"
#include "models/samplers.h"
#include "models/sd_unet.h"
#include "models/tiny_mdlm.h"
#include "models/tiny_video.h"
#include "models/unet.h"
#include "models/vae.h"
#include "models/video_pipeline.h"

namespace cachelab {

void register_models() {
  backbones().add<Dit, DitOptions>("dit", "class-conditional DiT with adaLN-Zero (reference parameter names)", __FILE__);
  backbones().add<Pixart, PixartOptions>("pixart", "PixArt-alpha text-to-image DiT: adaLN-single, caption cross-attention (reference names)", __FILE__);
  backbones().add<Unet, UnetOptions>("unet", "class-conditional U-Net (skip connections; DeepCache branch sites)", __FILE__);
  backbones().add<SdUnet, SdUnetOptions>("sd_unet", "Stable Diffusion 1.x text-conditional U-Net (CompVis / diffusers names; DeepCache branch sites)", __FILE__);
  samplers().add<DdimSampler, DdimOptions>("ddim", "DDIM over evenly spaced timesteps (eta = 0: deterministic)", __FILE__);
  samplers().add<EulerFlowSampler, EulerFlowOptions>("euler_flow", "rectified flow, Euler steps on a predicted velocity", __FILE__);
  samplers().add<HeunFlowSampler, HeunFlowOptions>("heun_flow", "rectified flow, Heun (2nd-order) steps: 2 evaluations per step", __FILE__);
  samplers().add<DdpmSampler, DdpmOptions>("ddpm", "ancestral DDPM over a respaced schedule", __FILE__);
  samplers().add<DpmSolverSampler, DpmSolverOptions>("dpm_solver", "multistep DPM-Solver++ (PixArt-alpha's default: 20 steps, order 2, time_uniform)", __FILE__);
  samplers().add<AdmSampler, AdmOptions>("adm", "guided diffusion's respaced DDPM / DDIM, step for step as DiT's sample.py", __FILE__);
  samplers().add<PlmsSampler, PlmsOptions>("plms", "PLMS as CompVis plms.py (Stable Diffusion; = diffusers PNDM with skip_prk_steps)", __FILE__);
  backbones().add<TinyMdlm, TinyMdlmOptions>("tiny_mdlm", "small bidirectional transformer over tokens (masked-diffusion LM)", __FILE__);
  backbones().add<Llada, LladaOptions>("llada", "LLaDA masked-diffusion LM (public config.json, sharded bf16 safetensors, reference names)", __FILE__);
  backbones().add<TinyVideo, TinyVideoOptions>("tiny_video", "small chunk-causal transformer over patches of video frames (bundled: video-mnist)", __FILE__);
  lm_decoders().add<LowConfidenceDecoder, LowConfidenceOptions>("low_confidence", "LLaDA: a fixed number of tokens per step, the most confident first", __FILE__);
  lm_decoders().add<RandomDecoder, LowConfidenceOptions>("random", "LLaDA's random remasking: a fixed number per step in a seeded random order", __FILE__);
  lm_decoders().add<ThresholdDecoder, ThresholdDecodingOptions>("threshold", "Fast-dLLM: every token whose confidence is >= threshold (at least one)", __FILE__);
  lm_decoders().add<CreditDecoder, CreditDecodingOptions>("credit", "dInfer's credit decoding: the threshold rule on logits fused with each token's accumulated top-1 credit", __FILE__);
  lm_decoders().add<FactorDecoder, FactorDecodingOptions>("factor", "Fast-dLLM factor-based: the n most confident, n the largest with (n + 1)(1 - c_n) < factor", __FILE__);
  lm_decoders().add<WedlmDecoder, WedlmDecodingOptions>("wedlm", "WeDLM's streaming parallel decoding: a window of positions from the first masked one, entropy plus a distance penalty under a threshold commits", __FILE__);
  lm_decoders().add<SlidingWindowDecoder, SlidingWindowOptions>("sliding_window", "Deferred Commitment Decoding: a sliding window over the masked positions instead of fixed blocks; uncertain tokens wait for right context", __FILE__);
  lm_decoders().add<Learn2pdDecoder, Learn2pdOptions>("learn2pd", "Learn2PD: a trained filter commits the positions whose prediction it judges final (at least the most confident)", __FILE__);
  pipelines().add<ImagePipeline, ImagePipelineOptions>("image", "images: x_T ~ N(0, I), one denoiser call per sampler step", __FILE__);
  decoders().add<SdVae, SdVaeComponentOptions>("sd_vae", "Stable Diffusion's KL VAE decoder (DiT, PixArt, SD 1.x latents -> images)", __FILE__);
  evaluators().add<InceptionJudge, InceptionJudgeOptions>("inception", "pytorch-fid's InceptionV3: FID features and Inception logits of RGB samples (sample_quality)", __FILE__);
  evaluators().add<Judge, LenetJudgeOptions>("lenet", "LeNet judge (lenet-mnist or lenet-fashion weights): class agreement and the FID feature space", __FILE__);
  pipelines().add<TidarPipeline, TidarPipelineOptions>("tidar", "TiDAR: drafts verified by the AR head and the next drafted by diffusion in one forward (a llada with tidar)", __FILE__);
  pipelines().add<MdlmPipeline, MdlmPipelineOptions>("mdlm", "masked-diffusion LM: blocks of tokens x denoising steps, low-confidence remasking", __FILE__);
  pipelines().add<MdlmTextPipeline, MdlmTextOptions>("mdlm_text", "the mdlm pipeline on questions of a JSONL file (GSM8K), tokenized by a tokenizer.json (LLaDA chat template)", __FILE__);
  pipelines().add<VideoPipeline, VideoPipelineOptions>("video", "AR video: chunks of frames x denoising steps, past chunks as context", __FILE__);
  guidances().add<CfgGuidance, CfgGuidanceOptions>("cfg", "classifier-free guidance (scale: run.cfg_scale)", __FILE__);
}

}  // namespace cachelab
