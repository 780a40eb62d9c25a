// Calibration files as artefacts made on demand (framework/artefacts.h): one per maker and
// calibration setting, stored by identity, made once, recorded in the run file, equal to what
// `cachelab calibrate` writes for the same settings.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <filesystem>

#include "framework/artefacts.h"
#include "framework/profile.h"
#include "framework/registries.h"
#include "framework/schedule.h"
#include "framework/schedulers.h"
#include "framework/recorder.h"
#include "framework/safetensors.h"
#include "framework/session.h"
#include "tests/test_util.h"
#include <set>

using namespace cachelab;
namespace fs = std::filesystem;

namespace {
// Two quantized variants that share one calibration file (as an author writes them), one with a
// corrector fitted on top of it, and a variant that fits nothing.
std::string experiment_yaml(const std::string& weights, const std::string& calibration, int act_bits = 6) {
  const std::string ptq = "{type: ptq, weight_bits: 6, act_bits: " + std::to_string(act_bits) +
                          ", calibration: results/calib/t-w6a6.safetensors}";
  return "name: t\nbackbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
         "weights: " + weights + "}\nsampler: {type: ddim, steps: 6}\nrun: {samples: 3, batch: 3, save_samples: 0, "
         "timing_reps: 0}\nmetrics: [psnr]\n" + calibration +
         "variants:\n  w6a6: {ops: [" + ptq + "]}\n  fora: {cache: {type: fora, interval: 2}}\n"
         "  vc: {cache: {type: vc, inner: {type: fora, interval: 2}, table: results/calib/t-vc.safetensors}, ops: [" +
         ptq + "]}\n";
}
const RunSpec& run_named(const ExperimentSpec& s, const std::string& name) {
  for (auto& r : s.runs)
    if (r.name == name) return r;
  BOOST_FAIL("no run " << name);
  return s.runs.front();
}
// The artefact of `run` made from the file the experiment named `name`.
const Artefact& named(const RunSpec& run, const std::string& name) {
  for (auto& a : run.artefacts)
    if (a.name == name) return a;
  BOOST_FAIL(run.name << " has no artefact " << name);
  return run.artefacts.front();
}
const std::string kQ = "results/calib/t-w6a6.safetensors", kVc = "results/calib/t-vc.safetensors";
}  // namespace

BOOST_AUTO_TEST_SUITE(artefacts)

BOOST_AUTO_TEST_CASE(names_become_artefacts_by_identity_shared_as_written) {
  cachelab::testing::TempDir d;
  const std::string cal = "calibration: {seed: 7, samples: 2}\nsweep: {calibration.seed: [7, 8], seed: [0, 1]}\n";
  auto load = [&](int act_bits) {
    return load_experiment(d.file("e.yaml", experiment_yaml("", cal, act_bits)), {}, d.path + "/results");
  };
  const auto spec = load(6);
  BOOST_REQUIRE_EQUAL(spec.runs.size(), 10u);  // (fora fits nothing: once per seed, not per calibration seed)
  const RunSpec& w7 = run_named(spec, "w6a6[calibration.seed=7,seed=0]");
  const RunSpec& w8 = run_named(spec, "w6a6[calibration.seed=8,seed=0]");
  const RunSpec& v7 = run_named(spec, "vc[calibration.seed=7,seed=1]");
  BOOST_REQUIRE_EQUAL(w7.artefacts.size(), 1u);
  BOOST_REQUIRE_EQUAL(v7.artefacts.size(), 2u);
  // The quantizer's file is shared as written: made by the first run naming it, per calibration seed.
  BOOST_CHECK_EQUAL(named(v7, kQ).path, w7.artefacts[0].path);
  BOOST_CHECK_EQUAL(named(v7, kQ).maker, "w6a6[calibration.seed=7,seed=0]");
  BOOST_CHECK_NE(w7.artefacts[0].path, w8.artefacts[0].path);
  BOOST_CHECK_EQUAL(run_named(spec, "w6a6[calibration.seed=7,seed=1]").artefacts[0].path, w7.artefacts[0].path);
  BOOST_CHECK_EQUAL(named(v7, kVc).maker, "vc[calibration.seed=7,seed=0]");
  BOOST_CHECK(named(v7, kVc).path.rfind(d.path + "/results/artefacts/t-vc-", 0) == 0);
  BOOST_CHECK(v7.resolved_yaml.find(named(v7, kVc).path) != std::string::npos);
  // The maker's calibration run: the calibration's seed and samples, stored paths.
  const ConfigNode& c = w8.calibration_config;
  BOOST_CHECK_EQUAL(c.find("seed")->scalar, "8");
  BOOST_CHECK_EQUAL(c.find("run")->find("samples")->scalar, "2");
  BOOST_CHECK(!c.find("calibration"));
  BOOST_CHECK(run_named(spec, "vc[calibration.seed=8,seed=1]").calibration_config.is_null());
  // A run that fits nothing carries no calibration settings and runs once per seed.
  const RunSpec& f0 = run_named(spec, "fora[seed=0]");
  BOOST_CHECK(f0.artefacts.empty());
  BOOST_CHECK(f0.resolved_yaml.find("calibration") == std::string::npos);
  BOOST_CHECK(run_named(spec, "fora[seed=1]").artefacts.empty());
  // Stable across loads, with the artefacts present or not; a changed maker changes its
  // artefact and every artefact fitted on top of it.
  BOOST_CHECK_EQUAL(load(6).runs[0].run_id, spec.runs[0].run_id);
  const auto changed = load(8);
  BOOST_CHECK_NE(run_named(changed, w7.name).artefacts[0].path, w7.artefacts[0].path);
  BOOST_CHECK_NE(named(run_named(changed, v7.name), kVc).path, named(v7, kVc).path);
  BOOST_CHECK_EQUAL(without_seed("vc[calibration.seed=8,seed=1]"), "vc");
  BOOST_CHECK_EQUAL(without_seed("fora[cache.interval=2,calibration.seed=8]"), "fora[cache.interval=2]");
  // Without a `calibration:` map the files are the author's, as before.
  const auto legacy = load_experiment(d.file("l.yaml", experiment_yaml("", "")), {}, d.path + "/results");
  BOOST_CHECK(legacy.runs[0].artefacts.empty());
  BOOST_CHECK(legacy.runs[0].resolved_yaml.find("results/calib/t-w6a6.safetensors") != std::string::npos);
  BOOST_CHECK_THROW(load_experiment(d.file("b.yaml", experiment_yaml("", "calibration: {seed: 7, sample: 2}\n")), {}),
                    Error);
}

BOOST_AUTO_TEST_CASE(run_makes_each_once_records_it_and_equals_the_calibrate_command) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  const std::string w = d.path + "/w.safetensors";
  SweepOptions o;
  o.results_root = d.path + "/results";
  const auto spec = load_experiment(d.file("e.yaml", experiment_yaml(w, "calibration: {seed: 7, samples: 2}\n")), {},
                                    o.results_root);
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  const RunSpec& vc = run_named(spec, "vc");
  BOOST_REQUIRE_EQUAL(vc.artefacts.size(), 2u);
  std::map<std::string, fs::file_time_type> made;
  for (auto& a : vc.artefacts) {
    BOOST_REQUIRE(fs::is_regular_file(a.path));
    BOOST_CHECK(fs::is_regular_file(a.path + ".json"));
    made[a.path] = fs::last_write_time(a.path);
  }
  // The run file names what it read, with digests.
  const std::string run_file = o.results_root + "/t/" + vc.run_id + ".h5";
  auto info = read_run_info(run_file);
  BOOST_REQUIRE(info && info->status == "done");
  // Resumed, and with its run file gone, nothing is made again.
  fs::remove(run_file);
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  for (auto& a : vc.artefacts) BOOST_CHECK(fs::last_write_time(a.path) == made[a.path]);
  BOOST_CHECK(read_run_info(run_file));
  // What `cachelab calibrate` writes for the same settings (seed 7, 2 samples) is the same.
  // (the command's files are written where the experiment names them: here, the temp dir)
  std::vector<std::string> over = {"seed=7", "run.samples=2",
                                   "variants.w6a6.ops=[{type: ptq, weight_bits: 6, act_bits: 6, calibration: " + d.path + "/q.safetensors}]",
                                   "variants.vc.ops=[{type: ptq, weight_bits: 6, act_bits: 6, calibration: " + d.path + "/q.safetensors}]",
                                   "variants.vc.cache.table=" + d.path + "/vc.safetensors"};
  const auto manual = load_experiment(d.file("l.yaml", experiment_yaml(w, "")), over);
  BOOST_REQUIRE_EQUAL(calibrate_experiment(manual, o), 2);
  for (auto [mine, theirs] : {std::pair{named(vc, kQ).path, d.path + "/q.safetensors"},
                              std::pair{named(vc, kVc).path, d.path + "/vc.safetensors"}}) {
    const auto a = read_safetensors(mine), b = read_safetensors(theirs);
    BOOST_REQUIRE_EQUAL(a.tensors.size(), b.tensors.size());
    for (size_t i = 0; i < a.tensors.size(); ++i)
      BOOST_CHECK_MESSAGE(at::equal(a.tensors[i].second, b.tensors[i].second), mine << ": " << a.tensors[i].first);
  }
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(scheduled)

// A sweep over the budget and the maker is one command: one profile, one schedule per point,
// equal to profiling with `cachelab profile` on the calibration seed and making it by hand.
BOOST_AUTO_TEST_CASE(a_scheduler_sweep_makes_one_profile_and_a_schedule_per_point) {
  cachelab::testing::TempDir d;
  Dit m(cachelab::testing::tiny_dit_options());
  cachelab::testing::randomize(m);
  m.save(d.path + "/w.safetensors", {});
  const std::string model = "backbone: {type: dit, input_size: 8, patch_size: 2, hidden_size: 32, depth: 4, num_heads: 2, "
                            "weights: " + d.path + "/w.safetensors}\nsampler: {type: ddim, steps: 8}\n";
  const std::string yaml = "name: s\n" + model +
                           "run: {samples: 2, batch: 2, save_samples: 0, timing_reps: 0}\nmetrics: [psnr]\n"
                           "calibration: {seed: 7}\nvariants:\n  sched: {cache: {type: schedule, scheduler: {type: dp, "
                           "computes: 3}, profile_samples: 2, profile_lags: 1}}\n"
                           "sweep: {cache.scheduler.computes: [3, 5], cache.scheduler.type: [dp, uniform]}\n";
  SweepOptions o;
  o.results_root = d.path + "/results";
  const auto spec = load_experiment(d.file("e.yaml", yaml), {}, o.results_root);
  BOOST_REQUIRE_EQUAL(spec.runs.size(), 4u);
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  std::set<std::string> profiles;
  for (auto& e : fs::directory_iterator(o.results_root + "/artefacts"))
    if (e.path().extension() == ".h5") profiles.insert(e.path().string());
  BOOST_REQUIRE_EQUAL(profiles.size(), 1u);
  // By hand: the reference profiled on seed 7 (2 samples, lags 0..1), then each maker on it.
  ProfileOptions po;
  po.samples = 2, po.lags = 1, po.output = d.path + "/p.h5";
  SweepOptions so = o;
  so.results_root = d.path + "/manual";
  profile_experiment(load_experiment(d.file("m.yaml", yaml), {"seed=7"}, so.results_root), so, po);
  const Profile by_hand = read_profile(po.output);
  for (auto& r : spec.runs) {
    BOOST_REQUIRE_EQUAL(r.artefacts.size(), 1u);
    const Artefact& a = r.artefacts[0];
    BOOST_CHECK_EQUAL(a.kind, "schedule");
    const Schedule made = load_schedule(a.path);
    const Schedule want = schedulers().build(*a.recipe.find("scheduler"))->make(by_hand, "", nullptr);
    BOOST_CHECK_MESSAGE(made.compute == want.compute, r.name);
    BOOST_CHECK_EQUAL(made.computes(), std::stoi(a.recipe.find("scheduler")->find("computes")->scalar));
  }
  // Resumed: nothing is made again. Without a `calibration:` map a scheduler is refused by name.
  const auto mtime = fs::last_write_time(spec.runs[0].artefacts[0].path);
  fs::remove(o.results_root + "/s/" + spec.runs[0].run_id + ".h5");
  BOOST_REQUIRE_EQUAL(execute_experiment(spec, o), 0);
  BOOST_CHECK(fs::last_write_time(spec.runs[0].artefacts[0].path) == mtime);
  std::string bare = yaml;
  bare.erase(bare.find("calibration: {seed: 7}\n"), std::string("calibration: {seed: 7}\n").size());
  cachelab::testing::check_error([&] { load_experiment(d.file("b.yaml", bare), {}); }, {"scheduler", "calibration:"});
}

BOOST_AUTO_TEST_SUITE_END()
