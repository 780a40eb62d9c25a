#include "framework/registries.h"

#include <vector>

#include "framework/backbone.h"
#include "framework/decoder.h"
#include "framework/error.h"
#include "framework/layer.h"
#include "framework/lm_decoder.h"
#include "framework/pipeline.h"
#include "framework/metric.h"
#include "framework/router_trainer.h"
#include "framework/schedulers.h"

namespace cachelab {

// Built on first use (function-local statics), so order of initialisation never matters.
#define CACHELAB_REGISTRY(fn, Base, kind) \
  Registry<Base>& fn() {                  \
    static Registry<Base> r(kind);        \
    return r;                             \
  }
CACHELAB_REGISTRY(backbones, Backbone, "backbone")
CACHELAB_REGISTRY(samplers, Sampler, "sampler")
CACHELAB_REGISTRY(pipelines, Pipeline, "pipeline")
CACHELAB_REGISTRY(guidances, Guidance, "guidance")
CACHELAB_REGISTRY(caches, SiteLayer, "cache")
CACHELAB_REGISTRY(ops_layers, Ops, "ops")
CACHELAB_REGISTRY(metrics, Metric, "metric")
CACHELAB_REGISTRY(evaluators, Evaluator, "judge")
CACHELAB_REGISTRY(decoders, Decoder, "decoder")
CACHELAB_REGISTRY(lm_decoders, LmDecoder, "lm_decoder")
CACHELAB_REGISTRY(schedulers, Scheduler, "scheduler")
CACHELAB_REGISTRY(router_trainers, RouterTrainer, "router_trainer")
#undef CACHELAB_REGISTRY

at::Tensor Evaluator::logits(const at::Tensor&) {
  CL_FAIL("this judge gives no class logits (the Inception Score needs a classifier judge such as `inception`)");
}

namespace {
std::vector<RegisterFn>& register_functions() {
  static std::vector<RegisterFn> fns;
  return fns;
}
}  // namespace

void add_register_function(RegisterFn fn) { register_functions().push_back(fn); }

ConfigNode resolve_component(const std::string& kind, const ConfigNode& node) {
  if (kind == "cache") return caches().resolve(node);
  if (kind == "ops") return ops_layers().resolve(node);
  if (kind == "guidance") return guidances().resolve(node);
  if (kind == "metric") return metrics().resolve(node);
  if (kind == "lm_decoder") return lm_decoders().resolve(node);
  if (kind == "scheduler") return schedulers().resolve(node);
  if (kind == "router_trainer") return router_trainers().resolve(node);
  CL_FAIL("internal: no registry of kind `" << kind << "` for a nested component");
}

void register_all() {
  static bool done = false;
  if (done) return;
  done = true;
  set_component_resolver(&resolve_component);
  for (auto fn : register_functions()) fn();
}

}  // namespace cachelab
