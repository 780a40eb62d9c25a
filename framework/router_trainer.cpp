#include "framework/router_trainer.h"

#include <filesystem>

#include "framework/backbone.h"
#include "framework/error.h"
#include "framework/paths.h"
#include "framework/registries.h"
#include "framework/sampler.h"

namespace cachelab {

void train_router(const ConfigNode& recipe, const std::string& output) {
  const ConfigNode& backbone = *recipe.find("backbone");
  auto bb = backbones().build(backbone);  // its own copy: training freezes its parameters
  auto sampler = samplers().build(*recipe.find("sampler"));
  std::string digest;  // ties the router file to these weights, as `cachelab train` does
  if (const ConfigNode* w = backbone.find("weights"); w && w->is_scalar() && !w->scalar.empty())
    digest = file_digest(resolve_path(w->scalar));
  const std::filesystem::path out(output);
  const std::string log = (out.parent_path() / (out.stem().string() + "-log.h5")).string();
  router_trainers().build(*recipe.find("trainer"))->train(*bb, *sampler, output, log, to_yaml(recipe), digest);
}

}  // namespace cachelab
