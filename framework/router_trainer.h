// Router trainers as components: what `cache: {type: l2c, train: {type: l2c, lambda: 0.001}}`
// trains on demand (framework/artefacts.h) for the run's own backbone and sampler, as
// `cachelab train` does with a `model: l2c` recipe. Registered in caches/register.cpp
// (caches/l2c_train.h: l2c, harmonica). Torch-free.
#pragma once
#include <string>

#include "framework/config.h"

namespace cachelab {

class Backbone;
class Sampler;

class RouterTrainer {
 public:
  virtual ~RouterTrainer() = default;
  // Trains a router for `bb` (frozen) under `sampler`; writes the router file `output` (with
  // `recipe_yaml` and `backbone_digest` in its metadata) and the loss curve `log`.
  virtual void train(Backbone& bb, const Sampler& sampler, const std::string& output, const std::string& log,
                     const std::string& recipe_yaml, const std::string& backbone_digest) const = 0;
};

// Trains the router a `recipe` ({trainer, backbone, sampler}, resolved) describes into the
// router file `output`; its loss curve goes beside it (`<output stem>-log.h5`).
void train_router(const ConfigNode& recipe, const std::string& output);

}  // namespace cachelab
