#include "tools/train_command.h"

#include <algorithm>
#include <cstdio>

#include "caches/l2c_train.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/paths.h"
#include "framework/registries.h"
#include "framework/sampler.h"
#include "framework/system_info.h"
#include "models/learn2pd.h"
#include "models/lenet.h"
#include "framework/idx_dataset.h"
#include "models/train.h"
#include "models/train_lm.h"
#include "models/train_video.h"

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
  CL_CHECK(model && model->is_scalar(), file << ": a training config needs `model: dit`, `model: unet`, `model: lenet`, `model: l2c`, `model: mdlm`, `model: video` or `model: learn2pd`");
  CL_CHECK(!root.find("sampler") || model->scalar == "l2c",
           root.find("sampler")->where() << ": `sampler:` is read by `model: l2c` only");
  const ConfigNode empty = ConfigNode::make_map("train");
  const ConfigNode& train = root.find("train") ? *root.find("train") : empty;
  // A diffusion backbone's keys (`backbone:` without its type) and the trainer's options.
  auto backbone_keys = [&](const char* keys) {
    CL_CHECK(root.find("backbone"),
             file << ": `model: " << model->scalar << "` needs a `backbone:` map (the " << keys << "'s keys)");
    ConfigNode bb = *root.find("backbone");
    bb.erase("type");
    return bb;
  };
  auto diffusion_train = [&] {
    auto to = read_options<TrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    return to;
  };
  if (model->scalar == "dit") {
    auto mo = read_options<DitOptions>(backbone_keys("DiT"), "backbone `dit`");
    train_dit(mo, diffusion_train(), to_yaml(root));
    return 0;
  }
  if (model->scalar == "unet") {
    auto mo = read_checked<UnetOptions>(backbone_keys("U-Net"), "backbone `unet`");
    train_unet(mo, diffusion_train(), to_yaml(root));
    return 0;
  }
  if (model->scalar == "lenet") {
    auto to = read_options<LenetTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    train_lenet(to);
    return 0;
  }
  // The experiment's backbone map without its weights: random init (or a resume); train.output
  // is where the weights go.
  auto untrained_backbone = [&] {
    ConfigNode node = *root.find("backbone");
    node.erase("weights");
    return backbones().build(node);
  };
  if (model->scalar == "mdlm") {
    // A masked-diffusion LM (the backbone map is an experiment's: tiny_mdlm, llada) on the
    // exactly-checkable tasks of framework/lm_tasks.h.
    CL_CHECK(root.find("backbone"), file << ": `model: mdlm` needs a `backbone:` map (type tiny_mdlm or llada)");
    auto to = read_checked<LmTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    auto bb = untrained_backbone();
    train_masked_lm(*bb, to, to_yaml(root));
    return 0;
  }
  if (model->scalar == "learn2pd") {
    // Learn2PD's filter for a trained masked-diffusion LM (the backbone map is an experiment's).
    CL_CHECK(root.find("backbone"), file << ": `model: learn2pd` needs a `backbone:` map (the trained LM's)");
    auto to = read_checked<Learn2pdTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    auto bb = backbones().build(*root.find("backbone"));
    std::string digest;  // ties the filter file to these weights
    if (const ConfigNode* w = root.find("backbone")->find("weights"); w && w->is_scalar() && !w->scalar.empty())
      digest = file_digest(resolve_path(w->scalar));
    train_learn2pd(*bb, to, to_yaml(root), digest);
    return 0;
  }
  if (model->scalar == "video") {
    // The AR video model (tiny_video; the backbone map is an experiment's) on Moving MNIST.
    CL_CHECK(root.find("backbone"), file << ": `model: video` needs a `backbone:` map (type tiny_video)");
    auto to = read_checked<VideoTrainOptions>(train, "train");
    std::printf("%s\n", describe(system_info(to.threads)).c_str());
    auto bb = untrained_backbone();
    auto* video = dynamic_cast<TinyVideo*>(bb.get());
    CL_CHECK(video, file << ": `model: video` trains a tiny_video backbone");
    train_video(*video, to, to_yaml(root));
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
    std::string digest;  // ties the router file to these weights
    if (const ConfigNode* w = root.find("backbone")->find("weights"); w && w->is_scalar() && !w->scalar.empty())
      digest = file_digest(resolve_path(w->scalar));
    train_l2c(*bb, *sampler, to, to_yaml(root), digest);
    return 0;
  }
  CL_FAIL(model->where() << ": unknown model `" << model->scalar << "`"
                         << did_you_mean(model->scalar, {"dit", "unet", "lenet", "l2c", "mdlm", "video", "learn2pd"})
                         << "; valid: dit, unet, lenet, l2c, mdlm, video, learn2pd");
}

}  // namespace cachelab
