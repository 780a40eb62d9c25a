// A router trained on demand (an l2c cache's `train:`, framework/router_trainer.h): one per
// trainer recipe, backbone and sampler, shared by every run and seed that names it, made once,
// equal to training with the same recipe by hand (what `cachelab train` does).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "caches/l2c.h"
#include "caches/l2c_train.h"
#include "framework/experiment.h"
#include "framework/registries.h"
#include "framework/sampler.h"
#include "framework/session.h"
#include "models/dit.h"
#include "tests/test_util.h"

using namespace cachelab;
namespace fs = std::filesystem;

namespace {
std::string experiment_yaml(const std::string& weights, const std::string& lambda) {
  const std::string train = "{type: l2c, trajectories: 3, eval_trajectories: 1, pool_batch: 4, batch_size: 2, "
                            "iterations: 4, lambda: " + lambda + ", seed: 3}";
  return "name: r\nbackbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
         "weights: " + weights + "}\nsampler: {type: ddim, steps: 6}\nrun: {samples: 2, batch: 2, cfg_scale: 2, "
         "save_samples: 0, timing_reps: 0}\nmetrics: [psnr]\nsweep: {seed: [0, 1]}\nvariants:\n"
         "  a: {cache: {type: l2c, train: " + train + "}}\n"
         "  b: {cache: {type: l2c, threshold: 0.7, train: " + train + "}}\n";
}
}  // namespace

BOOST_AUTO_TEST_SUITE(router_artefact)

BOOST_AUTO_TEST_CASE(one_router_per_recipe_made_once_and_equal_to_training_by_hand) {
  register_all();
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  const std::string w = d.path + "/w.safetensors";
  m.save(w, {});
  SweepOptions o;
  o.results_root = d.path + "/results";
  const auto spec = load_experiment(d.file("e.yaml", experiment_yaml(w, "0.01")), {}, o.results_root);
  BOOST_REQUIRE_EQUAL(spec.runs.size(), 4u);
  const Artefact& a = spec.runs[0].artefacts.at(0);
  BOOST_CHECK_EQUAL(a.kind, "router");
  for (auto& r : spec.runs) {  // every variant and seed reads the same router
    BOOST_REQUIRE_EQUAL(r.artefacts.size(), 1u);
    BOOST_CHECK_EQUAL(r.artefacts[0].path, a.path);
    BOOST_CHECK(r.resolved_yaml.find(a.path) != std::string::npos);
  }
  // The guidance and threads the router is trained at default to the run's.
  const ConfigNode& trainer = *a.recipe.find("trainer");
  BOOST_CHECK_EQUAL(std::stod(trainer.find("cfg_scale")->scalar), 2.0);
  BOOST_CHECK_EQUAL(trainer.find("threads")->scalar, "1");
  // Another recipe is another router (and other run ids).
  const auto other = load_experiment(d.file("f.yaml", experiment_yaml(w, "0.02")), {}, o.results_root);
  BOOST_CHECK_NE(other.runs[0].artefacts.at(0).path, a.path);
  BOOST_CHECK_NE(other.runs[0].run_id, spec.runs[0].run_id);

  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  BOOST_REQUIRE(fs::is_regular_file(a.path));
  BOOST_CHECK(fs::is_regular_file(a.path + ".json"));
  int routers = 0;
  for (auto& e : fs::directory_iterator(o.results_root + "/artefacts")) routers += e.path().extension() == ".safetensors";
  BOOST_CHECK_EQUAL(routers, 1);
  // Resumed with a run file gone: the run is redone, the router is not trained again.
  const auto mtime = fs::last_write_time(a.path);
  fs::remove(o.results_root + "/r/" + spec.runs[3].run_id + ".h5");
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  BOOST_CHECK(fs::last_write_time(a.path) == mtime);
  BOOST_CHECK(fs::is_regular_file(o.results_root + "/r/" + spec.runs[3].run_id + ".h5"));

  // By hand: the same recipe on the same weights and sampler.
  auto to = read_checked<L2cTrainerOptions>(trainer, "train");
  to.output = d.path + "/manual.safetensors";
  to.log = d.path + "/manual-log.h5";
  Dit loaded(cachelab::testing::tiny_dit_options());
  loaded.load(w);
  auto sampler = samplers().build(*a.recipe.find("sampler"));
  const int threads = at::get_num_threads();
  train_l2c(loaded, *sampler, to, "");
  at::set_num_threads(threads);
  const auto made = load_l2c_router(a.path, nullptr), manual = load_l2c_router(to.output, nullptr);
  BOOST_CHECK(at::equal(made, manual));
  BOOST_CHECK(at::equal(manual, at::full_like(manual, 2.0)) == false);  // (it was trained: the logits moved)
}

BOOST_AUTO_TEST_CASE(a_train_setting_that_is_not_a_trainer_is_refused_by_name) {
  register_all();
  cachelab::testing::TempDir d;
  std::string yaml = experiment_yaml("", "0.01");
  const std::string bad = yaml.replace(yaml.find("type: l2c, trajectories"), 9, "type: l2d");
  cachelab::testing::check_error([&] { load_experiment(d.file("e.yaml", bad), {}, d.path); }, {"l2d", "harmonica"});
  cachelab::testing::check_error(
      [&] { load_experiment(d.file("g.yaml", experiment_yaml("", "0.01")), {"variants.a.cache.train.iterations=0"}, d.path); },
      {"iterations", ">= 1"});
  cachelab::testing::check_error(
      [&] { load_experiment(d.file("h.yaml", experiment_yaml("", "0.01")), {"variants.a.cache.train=3"}, d.path); },
      {"train", "router trainer"});
}

BOOST_AUTO_TEST_SUITE_END()
