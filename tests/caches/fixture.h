// The image tests' fixture (caches and quantizers): a tiny random DiT, 12 DDIM steps,
// guidance 1.5, its uncached reference, and helpers to run a policy or an ops layer and
// count decisions.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "caches/none.h"
#include "framework/error.h"
#include "framework/runner.h"
#include "models/samplers.h"
#include "tests/test_util.h"

namespace cachelab::testing {

struct Fixture {
  Dit model{tiny_dit_options()};
  DdimSampler sampler{cachelab::testing::ddim_options(12)};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  Fixture() {
    randomize(model);
    run.samples = 4;
    run.batch = 4;
    run.probe_samples = 2;
    NoCache none{NoCacheOptions{}};
    ref_traj = run_image(model, sampler, {&none}, run, nullptr, &ref);
  }
  Trajectory with(CachePolicy& p, Ops* ops = nullptr) {
    return run_image(model, sampler, {&p}, run, &ref, nullptr, ops);
  }
  // Every site computed, the linears through `ops`.
  Trajectory with(Ops& ops) {
    NoCache none{NoCacheOptions{}};
    return run_image(model, sampler, {&none}, run, &ref, nullptr, &ops);
  }
  int site(const std::string& name) const { return find_site(model.sites(), name); }
};

// f(s, degree): a random [3, 5] polynomial in s of the given degree (1 to 3) with fixed
// coefficients, for forecasters that must be exact up to their order.
struct RandomPolynomial {
  at::Tensor c[4] = {at::randn({3, 5}, at::kDouble), at::randn({3, 5}, at::kDouble), at::randn({3, 5}, at::kDouble),
                     at::randn({3, 5}, at::kDouble)};
  at::Tensor operator()(double s, int degree) const {
    auto v = c[0] + c[1] * s;
    if (degree >= 2) v = v + c[2] * s * s;
    if (degree >= 3) v = v + c[3] * s * s * s;
    return v;
  }
};

// Fits a calibrator of `layer` (its own by default) with one run of `run` on seed 11, not an
// evaluation seed; returns the calibrator's summary line.
inline std::string calibrate_once(Backbone& model, const Sampler& sampler, SiteLayer& layer, RunOptions run,
                                  Calibrator* c = nullptr) {
  if (!c) c = layer.calibrator();
  CL_CHECK(c, "calibrate_once: the layer has no calibrator");
  c->start_calibration();
  run.seed = 11;
  run_image(model, sampler, {&layer}, run, nullptr, nullptr);
  return c->finish_calibration();
}

inline int count(const Trajectory& t, int site, Decision d) {
  int n = 0;
  for (auto& s : t.steps) n += s.decision[site] == uint8_t(d);
  return n;
}

}  // namespace cachelab::testing

using cachelab::testing::Fixture;
using cachelab::testing::count;
