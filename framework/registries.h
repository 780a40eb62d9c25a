// Every extension point of cachelab, one line each. A component registers itself with
// one line in its folder's register function (models/register.cpp, caches/register.cpp,
// metrics/register.cpp, quant/register.cpp); main() calls them through register_all(),
// so nothing depends on static initialisation or on the linker keeping an object file.
#pragma once
#include <functional>

#include "framework/registry.h"

namespace cachelab {

class Backbone;
class Sampler;
class SiteLayer;
class Ops;
class Pipeline;
class Guidance;
class Metric;
class Evaluator;
class Decoder;
class LmDecoder;
class Scheduler;
class RouterTrainer;

Registry<Backbone>& backbones();    // denoisers: dit, ...
Registry<Sampler>& samplers();      // ddim, ddpm, ...
Registry<Pipeline>& pipelines();    // the loop: image, mdlm, video
Registry<Guidance>& guidances();    // cfg (classifier-free guidance conventions)
Registry<SiteLayer>& caches();      // site layers: none, fora, fbcache, taylorseer, dec, ...
Registry<Ops>& ops_layers();        // linear/attention implementations: quantizers, K/V caches
Registry<Metric>& metrics();        // psnr, ssim, fid, accuracy, ...
Registry<Evaluator>& evaluators();  // judges of samples: lenet (class agreement, FID features), inception
Registry<Decoder>& decoders();      // latents -> images before the metrics: sd_vae
Registry<Scheduler>& schedulers();  // schedule makers from a profile: dp, uniform, profiled, bac, diffsparse
Registry<RouterTrainer>& router_trainers();  // routers trained on demand for an l2c cache: l2c, harmonica
Registry<LmDecoder>& lm_decoders();  // masked-LM decoding rules (the mdlm pipeline's `decoder:`): low_confidence, ...

// The folders' register functions, called once by register_all(). A folder that is not
// linked into a binary simply is not registered there: main() names them all.
using RegisterFn = void (*)();
void add_register_function(RegisterFn fn);
void register_all();  // idempotent

// The registry of a nested component's kind ("cache", "ops", ...) resolves it.
ConfigNode resolve_component(const std::string& kind, const ConfigNode& node);

}  // namespace cachelab
