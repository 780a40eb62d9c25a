// `cachelab train CFG.yaml`: the trainers of every folder (models: dit, unet, lenet; caches: the
// l2c router), picked by the config's `model:`. It lives with the CLI, which knows every
// folder, so models never include caches/.
#pragma once
#include <string>
#include <vector>

namespace cachelab {

// `cachelab train CFG.yaml [key=value ...]`: a training config has `model: dit` (or `unet`) with
// `backbone:` and `train:` maps, `model: lenet` with a `train:` map, or `model: l2c` (a
// Learning-to-Cache router, caches/l2c_train.h) with `backbone:`, `sampler:` and `train:`.
int train_command(const std::string& file, const std::vector<std::string>& overrides);

}  // namespace cachelab
