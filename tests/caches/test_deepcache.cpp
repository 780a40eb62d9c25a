// DeepCache on a tiny random U-Net: the deep branch is computed exactly ceil(T/N) times
// (uniform), at the listed steps (non-uniform), the shallow path every step, FLOPs follow,
// interval 1 is the reference bit for bit.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <cstring>

#include "caches/dec.h"
#include "caches/deepcache.h"
#include "caches/none.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "framework/safetensors.h"
#include "models/samplers.h"
#include "models/unet.h"
#include "tests/caches/fixture.h"

using namespace cachelab;
using cachelab::testing::count;

namespace {

constexpr int kSteps = 10;

struct UnetFixture {
  Unet model{cachelab::testing::tiny_unet_options()};
  DdimSampler sampler{cachelab::testing::ddim_options(kSteps)};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  UnetFixture() {
    cachelab::testing::randomize(model);
    run.samples = 4;
    run.batch = 4;
    run.probe_samples = 2;
    NoCache none{NoCacheOptions{}};
    ref_traj = cachelab::testing::run_image(model, sampler, {&none}, run, nullptr, &ref);
  }
  Trajectory with(CachePolicy& p) { return cachelab::testing::run_image(model, sampler, {&p}, run, &ref, nullptr); }
  int site(const std::string& name) const { return find_site(model.sites(), name); }
  // FLOPs per sample of the sites under `site` (inclusive).
  double subtree_flops(int site) const {
    double f = 0;
    const auto& s = model.sites();
    for (size_t i = 0; i < s.size(); ++i)
      for (int p = int(i); p >= 0; p = s[size_t(p)].parent)
        if (p == site) {
          f += s[i].flops_per_sample;
          break;
        }
    return f;
  }
  double total_flops() const { return subtree_flops(0); }
};

DeepCachePolicy make(int interval, const std::string& schedule = "uniform", int branch = 0) {
  DeepCacheOptions o;
  o.interval = interval;
  o.schedule = schedule;
  o.branch = branch;
  return DeepCachePolicy(o);
}

}  // namespace

BOOST_FIXTURE_TEST_SUITE(deepcache, UnetFixture)

BOOST_AUTO_TEST_CASE(uniform_computes_the_deep_branch_ceil_T_over_N_times) {
  const int b0 = site("branches.0"), b1 = site("branches.1"), shallow_down = site("down.0.0"),
            shallow_up = site("up.0.0"), deep_block = site("down.1.0");
  for (int n : {2, 3, 4, 7}) {
    auto dc = make(n);
    auto t = with(dc);
    BOOST_CHECK_EQUAL(count(t, b0, Decision::Compute), (kSteps + n - 1) / n);
    for (int i = 0; i < kSteps; ++i) {
      const auto& s = t.steps[size_t(i)];
      const bool slow = i % n == 0;
      BOOST_CHECK_EQUAL(s.decision[size_t(b0)], uint8_t(slow ? Decision::Compute : Decision::Reuse));
      // The shallow path runs every step; below a reused branch nothing runs.
      BOOST_CHECK_EQUAL(s.decision[size_t(shallow_down)], uint8_t(Decision::Compute));
      BOOST_CHECK_EQUAL(s.decision[size_t(shallow_up)], uint8_t(Decision::Compute));
      BOOST_CHECK_EQUAL(s.decision[size_t(b1)], uint8_t(slow ? Decision::Compute : Decision::Skipped));
      BOOST_CHECK_EQUAL(s.decision[size_t(deep_block)], uint8_t(slow ? Decision::Compute : Decision::Skipped));
      // Signal: age of the deep features (0 when computed), finite.
      BOOST_CHECK_EQUAL(s.signal[size_t(b0)], double(i % n));
    }
    // FLOPs: the whole model at the slow steps, all but branches.0's subtree at the others.
    const double slow_steps = (kSteps + n - 1) / n;
    const double want = (kSteps * (total_flops() - subtree_flops(b0)) + slow_steps * subtree_flops(b0)) *
                        run.samples * 2 /* guidance doubles the batch */;
    BOOST_CHECK_CLOSE(t.flops, want, 1e-9);
    BOOST_CHECK(!at::equal(t.samples, ref.samples));
    BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  }
}

BOOST_AUTO_TEST_CASE(interval_one_is_the_reference_bit_for_bit) {
  auto dc = make(1);
  auto t = with(dc);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  BOOST_CHECK_EQUAL(count(t, site("branches.0"), Decision::Compute), kSteps);
}

BOOST_AUTO_TEST_CASE(non_uniform_schedule_is_centre_dense_and_the_run_follows_it) {
  // 50 steps, N = 5: 10 slow steps, 0 included, denser around step 25 than at the ends.
  auto slow = deepcache_slow_steps(50, 5, "non_uniform", 1.4, 0.5);
  BOOST_REQUIRE_EQUAL(slow.size(), size_t(10));
  BOOST_CHECK_EQUAL(slow.front(), 0);
  for (size_t i = 1; i < slow.size(); ++i) BOOST_CHECK_LT(slow[i - 1], slow[i]);
  BOOST_CHECK_LT(slow.back(), 50);
  int min_gap = 50, end_gap = slow[1] - slow[0];
  size_t at_min = 0;
  for (size_t i = 1; i < slow.size(); ++i)
    if (slow[i] - slow[i - 1] < min_gap) min_gap = slow[i] - slow[i - 1], at_min = i;
  BOOST_CHECK_LT(min_gap, 5);
  BOOST_CHECK_GT(end_gap, 5);
  BOOST_CHECK(slow[at_min] >= 15 && slow[at_min] <= 35);  // the densest gap is near the centre
  // power 1 is evenly spread around the centre: gaps of 5 (the uniform schedule's).
  auto flat = deepcache_slow_steps(50, 5, "non_uniform", 1.0, 0.5);
  BOOST_CHECK(flat == deepcache_slow_steps(50, 5, "uniform", 1.4, 0.5));
  // Same budget as uniform for every interval.
  for (int n = 1; n <= 10; ++n)
    BOOST_CHECK_EQUAL(deepcache_slow_steps(kSteps, n, "non_uniform", 1.4, 0.5).size(),
                      deepcache_slow_steps(kSteps, n, "uniform", 1.4, 0.5).size());

  // A run computes the deep branch at exactly the listed steps.
  auto listed = deepcache_slow_steps(kSteps, 3, "non_uniform", 1.4, 0.5);
  auto dc = make(3, "non_uniform");
  auto t = with(dc);
  const int b0 = site("branches.0");
  std::vector<int> computed;
  for (int i = 0; i < kSteps; ++i)
    if (t.steps[size_t(i)].decision[size_t(b0)] == uint8_t(Decision::Compute)) computed.push_back(i);
  BOOST_CHECK(computed == listed);
  BOOST_CHECK(listed != deepcache_slow_steps(kSteps, 3, "uniform", 1.4, 0.5));
}

BOOST_AUTO_TEST_CASE(branch_selects_the_skip_level_by_tag) {
  auto dc = make(2, "uniform", 1);
  auto t = with(dc);
  BOOST_CHECK_EQUAL(count(t, site("branches.0"), Decision::Compute), kSteps);
  BOOST_CHECK_EQUAL(count(t, site("branches.1"), Decision::Compute), kSteps / 2);
  BOOST_CHECK_EQUAL(count(t, site("branches.1"), Decision::Reuse), kSteps / 2);
  BOOST_CHECK_EQUAL(count(t, site("down.1.0"), Decision::Compute), kSteps);  // above skip 1: always
  BOOST_CHECK_EQUAL(count(t, site("mid.attn"), Decision::Skipped), kSteps / 2);
  auto bad = make(2, "uniform", 5);
  cachelab::testing::check_error([&] { with(bad); }, {"no Branch site with block 5", "0, 1"});
}

// DEC on feature maps: the channels of a [B, C, H, W] branch output are dim 1, not the last.
BOOST_AUTO_TEST_CASE(dec_fits_one_pair_per_feature_map_channel) {
  cachelab::testing::TempDir dir;
  const std::string table = dir.path + "/dec.safetensors";
  ConfigNode node = parse_config_string(
      "type: dec\ninner: {type: deepcache, interval: 3, branch: 0}\ntable: " + table + "\n", "dec.yaml");
  BuildContext ctx;
  ctx.sites = &model.sites();
  auto cal = caches().build(node, nullptr, ctx);
  BOOST_TEST_MESSAGE(cachelab::testing::calibrate_once(model, sampler, *cal, run));
  // One (a, b) per channel of the branch's output, at every step it is reused.
  const auto stem = "/branches.0/a";
  int64_t fitted = 0;
  for (auto& [name, a] : read_safetensors(table).tensors)
    if (name.size() > std::strlen(stem) && name.compare(name.size() - std::strlen(stem), std::strlen(stem), stem) == 0) {
      BOOST_CHECK_EQUAL(a.numel(), 16);  // tiny U-Net: branch 0 returns 16 channels (its last dim is 8 or 4)
      BOOST_CHECK(at::isfinite(a).all().item<bool>());
      ++fitted;
    }
  BOOST_CHECK_EQUAL(fitted, kSteps - 4);  // DeepCache N=3 over 10 steps reuses at 6 steps
  auto corrected = caches().build(node, nullptr, ctx);
  auto t = with(*corrected);
  BOOST_CHECK_EQUAL(t.failed_step, -1);
  auto dc = make(3);
  BOOST_CHECK(!at::equal(t.samples, with(dc).samples));  // the correction changed the run
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(deepcache_on_dit, Fixture)

BOOST_AUTO_TEST_CASE(a_backbone_without_branch_sites_is_an_error) {
  auto dc = make(2);
  cachelab::testing::check_error([&] { with(dc); }, {"no Branch site"});
}

BOOST_AUTO_TEST_SUITE_END()
