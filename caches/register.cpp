// Every cache policy, one line each.
#include "caches/cg_taylor.h"
#include "caches/dbcache.h"
#include "caches/dbprune.h"
#include "caches/dec.h"
#include "caches/delta_dit.h"
#include "caches/delta_cache.h"
#include "caches/dllm_cache.h"
#include "caches/elastic_cache.h"
#include "caches/deepcache.h"
#include "caches/fbcache.h"
#include "caches/flash_block.h"
#include "caches/foca.h"
#include "caches/easycache.h"
#include "caches/fora.h"
#include "caches/forecast.h"
#include "caches/interval_adjust.h"
#include "caches/kv_cache.h"
#include "caches/l2c.h"
#include "caches/l2c_train.h"
#include "caches/layer_skip.h"
#include "caches/magcache.h"
#include "caches/none.h"
#include "caches/schedule.h"
#include "caches/spectrum.h"
#include "caches/scm.h"
#include "caches/fastercache.h"
#include "caches/pab.h"
#include "caches/ras.h"
#include "caches/d2cache.h"
#include "caches/seq_kv.h"
#include "caches/taylorseer.h"
#include "caches/teacache.h"
#include "caches/threshold_search.h"
#include "caches/toca.h"
#include "caches/vc.h"
#include "caches/video_kv.h"
#include "caches/visual_prune.h"
#include "caches/zeus.h"
#include "framework/registries.h"
#include "framework/schedulers.h"

namespace cachelab {

void register_caches() {
  auto& r = caches();
  r.add<NoCache, NoCacheOptions>("none", "compute every site at every step (the reference)", __FILE__);
  r.add<ForaPolicy, ForaOptions>("fora", "FORA: reuse attn/mlp outputs, recompute every N-th step", __FILE__);
  r.add<FbCachePolicy, FbCacheOptions>(
      "fbcache", "First-Block Cache: skip the middle blocks while the first block's residual barely changes", __FILE__);
  r.add<TaylorSeerPolicy, TaylorSeerOptions>(
      "taylorseer", "TaylorSeer: forecast sub-layer outputs from finite differences, compute every N-th step", __FILE__);
  r.add<EasyCachePolicy, EasyCacheOptions>(
      "easycache", "EasyCache: reuse the model's last transformation (out - in) while its runtime-measured rate predicts a small accumulated change", __FILE__);
  r.add<UCachePolicy, UCacheOptions>(
      "ucache", "UCache (stable-diffusion.cpp): EasyCache's reuse with decay, a step window and a threshold relative to the output", __FILE__);
  r.add<SpectrumPolicy, SpectrumOptions>(
      "spectrum", "Spectrum (stable-diffusion.cpp): forecast skipped denoiser outputs, a Chebyshev ridge fit blended with a Taylor step, over a growing window", __FILE__);
  r.add<TeaCachePolicy, TeaCacheOptions>(
      "teacache", "TeaCache: skip the body while block 0's accumulated modulated-input change is small", __FILE__);
  r.add<TocaPolicy, TocaOptions>("toca", "ToCa: recompute a scored fraction of tokens, full refresh every N", __FILE__);
  r.add<CacheSchedulePolicy, CacheScheduleOptions>(
      "schedule", "a static schedule from a file (`cachelab schedule`: DP, uniform) or inline: which steps compute", __FILE__);
  r.add<DeepCachePolicy, DeepCacheOptions>(
      "deepcache", "DeepCache: reuse a U-Net's deep branch below a skip, recompute the shallow path", __FILE__);
  r.add<DecCorrector, DecOptions>("dec", "DEC: per-channel affine correction of any policy's stand-ins", __FILE__);
  r.add<DecCorrector, ResidualLinearOptions>(
      "residual_linear", "ERTACache's residual linearization: one closed-form (a, b) per step and site of the stand-ins", __FILE__);
  r.add<IntervalAdjust, IntervalAdjustOptions>(
      "interval_adjust", "ERTACache's timestep adjustment: a fitted integration interval scale on every cached step", __FILE__);
  r.add<VcCorrector, VcOptions>("vc", "Q&C variance compensation: the model output's spread matched per step to full precision", __FILE__);
  ops_layers().add<PrefixKvCache, PrefixKvOptions>(
      "prefix_kv", "Fast-dLLM block-wise prefix K/V cache for masked-diffusion LMs (mdlm)", __FILE__);
  ops_layers().add<BlockKvCache, BlockKvOptions>(
      "block_kv", "Fast-dLLM v2 block and sub-block K/V caches for block-causal LMs (llada's block_size)", __FILE__);
  ops_layers().add<VisualPrune, VisualPruneOptions>(
      "visual_prune", "visual-token pruning (FastV-style, the dMLLM redundancy study): the image's least-attended tokens "
                      "dropped from a block on, at chosen steps", __FILE__);
  ops_layers().add<RollingKvCache, RollingKvOptions>(
      "rolling_kv", "AR video: K/V of finished frames kept, attention over a window of past frames", __FILE__);
  ops_layers().add<ForcingKvCache, ForcingKvOptions>(
      "forcing_kv", "Forcing-KV: AR video K/V pruned per head; static heads keep sink + recent frames, dynamic ones a similarity-pruned budget", __FILE__);
  ops_layers().add<TempCache, TempCacheOptions>(
      "temp_cache", "TempCache: AR video K/V tokens merged into their previous frame's match (log-count attention bias)", __FILE__);
  ops_layers().add<VideoMlaCache, VideoMlaOptions>(
      "video_mla", "AR video K/V stored as per-head low-rank latents, bases fitted by SVD on the first stored frames", __FILE__);
  ops_layers().add<DualKvCache, DualKvOptions>(
      "dual_kv", "Fast-dLLM dual K/V cache: prefix and masked suffix cached, only the current block computed", __FILE__);
  ops_layers().add<VicinityKvCache, VicinityKvOptions>(
      "vicinity_kv", "dInfer's vicinity refresh: the dual cache computing `before` / `after` positions around the block at every step", __FILE__);
  ops_layers().add<DkvCache, DkvCacheOptions>(
      "dkv_cache", "dKV-Cache-Decode: a token's K/V cached one step after it is decoded, periodic refresh", __FILE__);
  ops_layers().add<D2Cache, D2CacheOptions>(
      "d2cache", "d2Cache: per step, masked positions by confidence x certainty density, decoded tokens and an attention-rollout nucleus recomputed", __FILE__);
  ops_layers().add<DllmCache, DllmCacheOptions>(
      "dllm_cache", "dLLM-Cache: prompt and generated positions refreshed at two intervals, the rest picked per layer by V-verify", __FILE__);
  ops_layers().add<ElasticCache, ElasticCacheOptions>(
      "elastic_cache", "Elastic-Cache: the block computed, a most-attended probe per layer; drift refreshes from that depth on", __FILE__);
  ops_layers().add<FlashBlockCache, FlashBlockOptions>(
      "flash_block", "FlashBlock: dual cache whose block queries reuse their block-external attention within a block", __FILE__);
  ops_layers().add<WindowDiffusionCache, WindowDiffusionOptions>(
      "window_diffusion", "Window-Diffusion: phases of a full forward then the nearest masked tokens only, far masks pruned", __FILE__);
  r.add<DbCachePolicy, DbCacheOptions>(
      "dbcache", "DBCache: Fn front blocks decide, the middle is skipped while their residual barely changes, Bn back blocks run", __FILE__);
  r.add<DbPrunePolicy, DbPruneOptions>(
      "dbprune", "DBPrune: each block outside Fn / Bn pruned alone (its cached residual added) while its input barely changed", __FILE__);
  r.add<DeltaDitPolicy, DeltaDitOptions>(
      "delta_dit", "Delta-DiT: cached deviation of a block range, rear blocks early, front blocks late", __FILE__);
  r.add<MagCachePolicy, MagCacheOptions>(
      "magcache", "MagCache: skip the body while calibrated residual-magnitude ratios keep the accumulated error small", __FILE__);
  r.add<ZeusPolicy, ZeusOptions>(
      "zeus", "ZEUS: skip the denoiser on a modular pattern, second-order extrapolation interleaved with reuse", __FILE__);
  r.add<CgTaylorPolicy, CgTaylorOptions>(
      "cg_taylor", "confidence-gated Taylor: forecast the last block while the first block's forecast holds", __FILE__);
  r.add<ForecastLayer, ForecastOptions>(
      "forecast", "TaylorSeer or FoCa forecasts in place of any policy's stand-ins (outputs of attn / mlp, residuals of blocks)", __FILE__);
  r.add<ScmPolicy, ScmOptions>(
      "scm", "step computation mask: a static per-step mask (presets), alone or around a dynamic policy", __FILE__);
  r.add<ThresholdSearch, ThresholdSearchOptions>(
      "threshold_search", "any threshold policy at the threshold `cachelab calibrate` found for a speedup or PSNR", __FILE__);
  r.add<FocaPolicy, FocaOptions>("foca", "FoCa: forecast sub-layer outputs with a BDF2 slope and a Heun calibration, compute every N-th step", __FILE__);
  r.add<LayerSkipPolicy, LayerSkipOptions>(
      "layer_skip", "static layer skipping (Skip to the Good Part): named blocks never computed, their input passes on", __FILE__);
  r.add<FasterCachePolicy, FasterCacheOptions>(
      "fastercache", "FasterCache: attention outputs extrapolated between computed steps, and the unconditional half of guidance skipped and estimated by frequency band (CFG-Cache)", __FILE__);
  r.add<PabPolicy, PabOptions>("pab", "Pyramid Attention Broadcast: reuse attention outputs over a timestep window, a range per attention type", __FILE__);
  r.add<RasPolicy, RasOptions>("ras", "RAS: update only the tokens in focus, the rest keep the previous noise estimate", __FILE__);
  r.add<DeltaCachePolicy, DeltaCacheOptions>("delta_cache", "Temporal Delta Cache: skip blocks whose residual (out - in) is stable, add the cached residual", __FILE__);
  r.add<L2cRouter, L2cOptions>("l2c", "Learning-to-Cache: a trained router per (step, block, attn/mlp) picks the sub-layers to reuse", __FILE__);

  // Router trainers (framework/router_trainer.h): an l2c cache's `train:`.
  auto& t = router_trainers();
  t.add<L2cRouterTrainer, L2cTrainerOptions>("l2c", "Learning-to-Cache's objective on consecutive-step pairs of uncached trajectories", __FILE__);
  t.add<L2cRouterTrainer, HarmonicaTrainerOptions>(
      "harmonica", "HarmoniCa's step-wise training along the router's own cached trajectory, weighted by an image-error proxy", __FILE__);

  // Schedule makers (framework/schedulers.h): a profile in, a schedule file's contents out.
  auto& s = schedulers();
  s.add<DpScheduler, DpSchedulerOptions>(
      "dp", "CacheQuant's dynamic programme: K runs of steps, each computed at its first step, least summed reuse distance", __FILE__);
  s.add<UniformScheduler, SchedulerOptions>("uniform", "K computed steps, evenly spaced", __FILE__);
  s.add<ProfiledScheduler, SchedulerOptions>(
      "profiled", "ERTACache-style: reuse while the distance to the last computed step stays under the least threshold that computes at most K steps", __FILE__);
  s.add<BacScheduler, BacSchedulerOptions>(
      "bac", "BAC: per-site DP schedules joined by the Bubbling Union (a per-step x per-site mask)", __FILE__);
  s.add<DiffsparseScheduler, SiteSchedulerOptions>(
      "diffsparse", "DiffSparse: per-step x per-site token rates under a mean-rate budget K / T, from a fitted cost predictor", __FILE__);
}

}  // namespace cachelab
