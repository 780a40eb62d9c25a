// The cache policies on the rectified-flow samplers (velocity model, euler_flow and
// heun_flow): each one really hits, with finite samples and signals, and on Heun's two
// evaluations per step the caches count flat evaluations.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/fora.h"
#include "caches/none.h"
#include "caches/taylorseer.h"
#include "caches/teacache.h"
#include "caches/toca.h"
#include "framework/runner.h"
#include "models/samplers.h"
#include "tests/caches/fixture.h"

using namespace cachelab;
using cachelab::testing::count;

namespace {

// A tiny random DiT sampled by a flow sampler (guidance 1.5), with its uncached reference.
struct FlowFixture {
  Dit model{cachelab::testing::tiny_dit_options()};
  std::unique_ptr<Sampler> sampler;
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  explicit FlowFixture(bool heun) {
    cachelab::testing::randomize(model);
    if (heun) {
      HeunFlowOptions o;
      o.steps = 6;
      sampler = std::make_unique<HeunFlowSampler>(o);
    } else {
      EulerFlowOptions o;
      o.steps = 12;
      sampler = std::make_unique<EulerFlowSampler>(o);
    }
    run.samples = 4;
    run.batch = 4;
    run.probe_samples = 2;
    NoCache none{NoCacheOptions{}};
    ref_traj = cachelab::testing::run_image(model, *sampler, {&none}, run, nullptr, &ref);
  }
  Trajectory with(CachePolicy& p) { return cachelab::testing::run_image(model, *sampler, {&p}, run, &ref, nullptr); }
  int site(const std::string& name) const { return find_site(model.sites(), name); }
};

void check_finite_and_off_reference(const Trajectory& t, const Trajectory& ref) {
  BOOST_CHECK_EQUAL(t.failed_step, -1);
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
  BOOST_CHECK(!at::equal(t.samples, ref.samples));
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK_LT(t.flops, ref.flops);
}

}  // namespace

BOOST_AUTO_TEST_SUITE(flow_policies)

// heun_flow in the image pipeline: one flat step per evaluation, timesteps t_k, t_{k+1}.
BOOST_AUTO_TEST_CASE(heun_reference_has_a_row_per_evaluation) {
  FlowFixture f(true);
  BOOST_REQUIRE_EQUAL(f.ref_traj.steps.size(), 12u);
  for (int i = 0; i < 12; ++i) BOOST_CHECK_EQUAL(f.ref_traj.steps[i].t, f.sampler->timesteps()[i]);
  BOOST_CHECK_EQUAL(f.ref_traj.steps[1].t, f.ref_traj.steps[2].t);  // corrector k, predictor k+1
  BOOST_CHECK(at::isfinite(f.ref_traj.samples).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(every_policy_hits_on_both_flow_samplers) {
  for (bool heun : {false, true}) {
    BOOST_TEST_CONTEXT((heun ? "heun_flow" : "euler_flow")) {
      FlowFixture f(heun);
      const int attn = f.site("blocks.1.attn"), body = f.site("body");
      const int T = int(f.ref_traj.steps.size());
      {
        ForaOptions o;
        o.interval = 2;
        ForaPolicy p(o);
        auto t = f.with(p);
        // Flat evaluations: on Heun every corrector evaluation reuses its predictor's output.
        for (int i = 0; i < T; ++i)
          BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(i % 2 == 0 ? Decision::Compute : Decision::Reuse));
        check_finite_and_off_reference(t, f.ref_traj);
      }
      {
        TaylorSeerOptions o;
        o.interval = 3;
        o.order = 1;
        o.warmup_steps = 0;
        TaylorSeerPolicy p(o);
        auto t = f.with(p);
        BOOST_CHECK_GT(count(t, attn, Decision::Predict), 0);
        check_finite_and_off_reference(t, f.ref_traj);
      }
      {
        TeaCacheOptions o;
        o.threshold = 0.15;
        TeaCachePolicy p(o);
        auto t = f.with(p);
        BOOST_CHECK_GT(count(t, body, Decision::Reuse), 0);
        for (int i = 1; i + 1 < T; ++i) BOOST_CHECK(std::isfinite(t.steps[i].signal[body]));
        check_finite_and_off_reference(t, f.ref_traj);
      }
      {
        TocaOptions o;
        o.interval = 3;
        o.fresh_ratio = 0.25;
        TocaPolicy p(o);
        auto t = f.with(p);
        BOOST_CHECK_GT(count(t, attn, Decision::Partial), 0);
        check_finite_and_off_reference(t, f.ref_traj);
      }
    }
  }
}

BOOST_AUTO_TEST_SUITE_END()
