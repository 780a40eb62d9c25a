// Running experiments in-process: run files, resume without redoing finished runs,
// a NaN trajectory recorded as failed at its step.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "framework/recorder.h"
#include "framework/session.h"
#include "tests/test_util.h"

using namespace cachelab;
namespace fs = std::filesystem;

namespace {
std::string experiment_yaml(const std::string& weights) {
  return "name: t\nbackbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
         "weights: " + weights + "}\nsampler: {type: ddim, steps: 5}\nrun: {samples: 3, batch: 2, save_samples: 2}\n"
         "metrics: [psnr, mse]\nvariants:\n  fora: {cache: {type: fora, interval: 2}}\n  fb: {cache: {type: fbcache}}\n";
}
}  // namespace

BOOST_AUTO_TEST_SUITE(session)

BOOST_AUTO_TEST_CASE(runs_resume_and_redo_only_what_is_missing) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  const std::string file = d.file("e.yaml", experiment_yaml(d.path + "/w.safetensors"));
  auto spec = load_experiment(file, {});
  SweepOptions o;
  o.results_root = d.path + "/results";
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  const std::string dir = o.results_root + "/t/";
  std::vector<std::string> ids = {spec.references[0].run_id, spec.runs[0].run_id, spec.runs[1].run_id};
  std::map<std::string, fs::file_time_type> mtimes;
  for (auto& id : ids) {
    auto info = read_run_info(dir + id + ".h5");
    BOOST_REQUIRE(info);
    BOOST_CHECK_EQUAL(info->status, "done");
    mtimes[id] = fs::last_write_time(dir + id + ".h5");
  }
  auto fora = read_run_info(dir + spec.runs[0].run_id + ".h5");
  BOOST_CHECK_CLOSE(fora->summary.at("speedup_flops"), fora->summary.at("ref_flops") / fora->summary.at("flops"), 1e-9);
  BOOST_CHECK_GT(fora->summary.at("reuse_fraction"), 0.0);
  BOOST_CHECK(std::isfinite(fora->summary.at("psnr")));
  // The process's peak resident memory: at least the LibTorch process itself (> 50 MB here).
  BOOST_CHECK_GT(fora->summary.at("peak_resident_bytes"), 50e6);

  // Resume: nothing is redone; a deleted run is redone alone.
  fs::remove(dir + spec.runs[1].run_id + ".h5");
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  BOOST_CHECK(fs::last_write_time(dir + ids[0] + ".h5") == mtimes[ids[0]]);
  BOOST_CHECK(fs::last_write_time(dir + ids[1] + ".h5") == mtimes[ids[1]]);
  BOOST_CHECK(read_run_info(dir + ids[2] + ".h5"));
  for (auto& e : fs::directory_iterator(dir)) BOOST_CHECK(e.path().string().find(".tmp") == std::string::npos);
}

BOOST_AUTO_TEST_CASE(nan_in_a_trajectory_is_recorded_as_failed_at_its_step) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  {
    c10::InferenceMode guard;
    for (auto& [name, t] : m.named_tensors())
      if (name == "final_layer.linear.bias") t.fill_(std::numeric_limits<float>::quiet_NaN());
  }
  m.save(d.path + "/w.safetensors", {});
  auto spec = load_experiment(d.file("e.yaml", experiment_yaml(d.path + "/w.safetensors")), {});
  SweepOptions o;
  o.results_root = d.path + "/results";
  BOOST_CHECK_EQUAL(execute_experiment(spec, o), 1);
  auto info = read_run_info(o.results_root + "/t/" + spec.references[0].run_id + ".h5");
  BOOST_REQUIRE(info);
  BOOST_CHECK_EQUAL(info->status, "failed");
  BOOST_CHECK_EQUAL(info->failed_step, 0);
  BOOST_CHECK(info->error.find("non-finite") != std::string::npos);
}

BOOST_AUTO_TEST_SUITE_END()
