#include "tools/train_command.h"

#include <algorithm>
#include <cstdio>

#include "caches/l2c_train.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/registries.h"
#include "framework/sampler.h"
#include "framework/system_info.h"
#include "models/lenet.h"
#include "models/mnist.h"
#include "models/train.h"

namespace cachelab {

int train_command(const std::string& file, const std::vector<std::string>& overrides) {
  ConfigNode root = load_config(file, {project_root() + "/configs"});
  for (auto& o : overrides) apply_override(root, o);
  const std::vector<std::string> keys = {"model", "backbone", "sampler", "train"};
  for (auto& k : root.keys())
    CL_CHECK(std::find(keys.begin(), keys.end(), k) != keys.end(),
             root.find(k)->where() << ": unknown key `" << k << "` in a training config" << did_you_mean(k, keys)
                                   << "; valid: model, backbone, sampler (l2c only), train");
  const ConfigNode* model = root.find("model");
  CL_CHECK(model && model->is_scalar(), file << ": a training config needs `model: dit`, `model: lenet` or `model: l2c`");
  CL_CHECK(!root.find("sampler") || model->scalar == "l2c",
           root.find("sampler")->where() << ": `sampler:` is read by `model: l2c` only");
  const ConfigNode empty = ConfigNode::make_map("train");
  const ConfigNode& train = root.find("train") ? *root.find("train") : empty;
  if (model->scalar == "dit") {
    CL_CHECK(root.find("backbone"), file << ": `model: dit` needs a `backbone:` map (the DiT's keys)");
    ConfigNode bb = *root.find("backbone");
    bb.erase("type");
    auto mo = read_options<DitOptions>(bb, "backbone `dit`");
    auto to = read_options<TrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    train_dit(mo, to, to_yaml(root));
    return 0;
  }
  if (model->scalar == "unet") {
    CL_CHECK(root.find("backbone"), file << ": `model: unet` needs a `backbone:` map (the U-Net's keys)");
    ConfigNode bb = *root.find("backbone");
    bb.erase("type");
    auto mo = read_checked<UnetOptions>(bb, "backbone `unet`");
    auto to = read_options<TrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    train_unet(mo, to, to_yaml(root));
    return 0;
  }
  if (model->scalar == "lenet") {
    auto to = read_options<LenetTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    train_lenet(to);
    return 0;
  }
  if (model->scalar == "l2c") {
    // A router for a frozen backbone under one sampler (the backbone and sampler maps are
    // the experiment's, read by their registries).
    CL_CHECK(root.find("backbone") && root.find("sampler"),
             file << ": `model: l2c` needs `backbone:` and `sampler:` maps (as an experiment's)");
    auto to = read_checked<L2cTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    auto bb = backbones().build(*root.find("backbone"));
    auto sampler = samplers().build(*root.find("sampler"));
    train_l2c(*bb, *sampler, to, to_yaml(root));
    return 0;
  }
  CL_FAIL(model->where() << ": unknown model `" << model->scalar << "`"
                         << did_you_mean(model->scalar, {"dit", "unet", "lenet", "l2c"}) << "; valid: dit, unet, lenet, l2c");
}

}  // namespace cachelab
