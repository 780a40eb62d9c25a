// Preflight estimates against what the runs then really cost: FLOPs exact for a reference
// and an upper bound for a caching variant; the reference cache's size close to the file.
#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>

#include "framework/error.h"
#include "framework/recorder.h"
#include "framework/session.h"
#include "tests/test_util.h"

using namespace cachelab;
namespace fs = std::filesystem;

namespace {
std::string experiment_yaml(const std::string& weights, int samples) {
  return "name: p\nbackbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
         "weights: " + weights + "}\nsampler: {type: ddim, steps: 5}\nrun: {samples: " + std::to_string(samples) +
         ", batch: 2, save_samples: 2, timing_reps: 0}\nmetrics: [mse]\nvariants:\n"
         "  fora: {cache: {type: fora, interval: 2}}\n";
}
}  // namespace

BOOST_AUTO_TEST_SUITE(preflight)

BOOST_AUTO_TEST_CASE(estimates_bound_what_the_runs_cost) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  auto spec = load_experiment(d.file("e.yaml", experiment_yaml(d.path + "/w.safetensors", 3)), {});
  SweepOptions o;
  o.results_root = d.path + "/results";
  RunCost ref_cost, fora_cost;
  {
    RunSession s(spec, o);
    ref_cost = s.cost(spec.references[0]);
    fora_cost = s.cost(spec.runs[0]);
  }
  setenv("CACHELAB_KEEP_CACHE", "1", 1);
  const int rc = execute_experiment(spec, o);
  unsetenv("CACHELAB_KEEP_CACHE");
  BOOST_REQUIRE_EQUAL(rc, 0);
  const std::string dir = o.results_root + "/p/";
  auto ref = read_run_info(dir + spec.references[0].run_id + ".h5");
  auto fora = read_run_info(dir + spec.runs[0].run_id + ".h5");
  BOOST_REQUIRE(ref && fora);
  // A dense trajectory's FLOPs are linear in the samples: the estimate is exact for it.
  BOOST_CHECK_CLOSE(ref_cost.flops, ref->summary.at("flops"), 1e-6);
  // A caching variant computes less than every site: the estimate bounds it.
  BOOST_CHECK_GE(fora_cost.flops, fora->summary.at("flops"));
  BOOST_CHECK_LT(fora->summary.at("flops"), 0.9 * fora_cost.flops);
  BOOST_CHECK_GT(ref_cost.seconds, 0.0);
  // The reference trajectory the variants read: within 30% of the cache file (serialisation
  // adds a header per tensor).
  const double cache = double(fs::file_size(dir + ".cache/" + spec.references[0].run_id + ".pt"));
  BOOST_CHECK_GT(ref_cost.reference_bytes, 0.7 * cache);
  BOOST_CHECK_LT(ref_cost.reference_bytes, 1.3 * cache);
  // The samples held (batches, their concatenation) grow with run.samples.
  BOOST_CHECK_GT(fora_cost.memory_bytes, 2.0 * 3 * 8 * 8 * 4);
  BOOST_CHECK_GT(fora_cost.weights_bytes, 0.0);
}

BOOST_AUTO_TEST_CASE(a_sweep_that_cannot_fit_is_refused_before_anything_runs) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  SweepOptions o;
  o.results_root = d.path + "/results";
  // Too long: a limit of a millisecond.
  auto spec = load_experiment(d.file("e.yaml", experiment_yaml(d.path + "/w.safetensors", 3)), {});
  o.max_hours = 1e-3 / 3600;
  try {
    execute_experiment(spec, o);
    BOOST_FAIL("not refused");
  } catch (const Error& e) {
    const std::string m = e.what();
    BOOST_CHECK(m.find("run.samples") != std::string::npos);
    BOOST_CHECK(m.find("--allow-long") != std::string::npos);
  }
  // Too large: samples of 256 B each, held at least three times, beyond any memory.
  auto big = load_experiment(d.file("big.yaml", experiment_yaml(d.path + "/w.safetensors", 2000000000)), {});
  o.max_hours = 0;
  try {
    execute_experiment(big, o);
    BOOST_FAIL("not refused");
  } catch (const Error& e) {
    BOOST_CHECK(std::string(e.what()).find("memory") != std::string::npos);
  }
  for (auto& e : fs::directory_iterator(o.results_root + "/p"))
    BOOST_CHECK_MESSAGE(e.path().extension() != ".h5" || e.path().filename().string()[0] == '.', e.path());
}

BOOST_AUTO_TEST_SUITE_END()
