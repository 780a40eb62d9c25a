// The image tests' fixture (caches and quantizers): a tiny random DiT, 12 DDIM steps,
// guidance 1.5, its uncached reference, and helpers to run a policy or an ops layer and
// count decisions.
#pragma once
#include <ATen/ATen.h>

#include <string>

#include "caches/none.h"
#include "framework/runner.h"
#include "models/samplers.h"
#include "tests/test_util.h"

namespace cachelab::testing {

struct Fixture {
  Dit model{tiny_dit_options()};
  DdimSampler sampler{[] {
    DdimOptions o;
    o.steps = 12;
    return o;
  }()};
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

inline int count(const Trajectory& t, int site, Decision d) {
  int n = 0;
  for (auto& s : t.steps) n += s.decision[site] == uint8_t(d);
  return n;
}

}  // namespace cachelab::testing

using cachelab::testing::Fixture;
using cachelab::testing::count;
