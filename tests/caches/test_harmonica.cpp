// HarmoniCa's training of the L2C router on a small random DiT: an unroll with the
// inference decisions is the inference trajectory, the image-error proxy equals separate
// runs, its weights are finite, positive and refreshed at the stated interval, gradients
// reach only the router (one row per iteration), the objective falls, the trained file
// runs as `cache: {type: l2c}`, and the options validate and round-trip.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/harmonica_train.h"
#include "caches/l2c.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/registry.h"
#include "framework/safetensors.h"
#include "models/samplers.h"
#include "tests/test_util.h"
#include "tools/components.h"

using namespace cachelab;

namespace {

constexpr int kSteps = 6;
constexpr double kScale = 2.0;

struct Fixture {
  Dit model{cachelab::testing::tiny_dit_options()};
  DdimSampler sampler{cachelab::testing::ddim_options(kSteps)};
  CfgGuidance guidance{CfgGuidanceOptions{}};
  int depth = cachelab::testing::tiny_dit_options().depth;
  Fixture() { cachelab::testing::randomize(model); }

  at::Tensor eval(Hooks& hooks, const at::Tensor& x, int step, const at::Tensor& labels) {
    Cond cond;
    cond.labels = labels;
    const auto t = at::full({x.size(0)}, double(sampler.timesteps()[size_t(step)]), at::kFloat);
    return guidance.eval(model, x, t, cond, kScale, hooks);
  }
  StepIndex index(int k) const { return {k, kSteps, 0, k, kSteps, sampler.timesteps()[size_t(k)]}; }
  // Final sample of a run from x through `router`; `mode(k)` picks each step's mode.
  template <class ModeOf>
  at::Tensor run(L2cRouter& router, at::Tensor x, const at::Tensor& labels, ModeOf mode) {
    c10::NoGradGuard g;
    LayerHooks hooks(model, {&router});
    hooks.begin_run(kSteps);
    for (int k = 0; k < kSteps; ++k) {
      router.set_mode(mode(k));
      hooks.begin_step(index(k));
      x = sampler.step(k, x, eval(hooks, x, k, labels), at::Tensor());
    }
    router.set_mode(L2cRouter::Mode::Infer);
    return x;
  }
  L2cTrainOptions options() const {
    L2cTrainOptions o;
    o.objective = "harmonica";
    o.cfg_scale = kScale;
    o.batch_size = 4;
    o.lr = 0.1;
    o.lambda = 0.02;
    o.init_logit = 1.0;
    o.full_every = 0;
    o.proxy_samples = 4;
    o.refresh_every = 1000;
    return o;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(harmonica, Fixture)

BOOST_AUTO_TEST_CASE(an_unroll_with_the_inference_decisions_is_the_inference_trajectory) {
  auto gen = at::detail::createCPUGenerator(5);
  const auto x0 = at::randn({3, 1, 8, 8}, gen);
  const auto labels = at::arange(3, at::kLong);
  const auto logits = at::randn({kSteps, depth, 2}, gen) * 2;
  L2cOptions o;
  o.full_every = 0;  // values reused for several steps: the cache must carry them
  L2cRouter router(logits, o);
  const auto infer = run(router, x0, labels, [](int) { return L2cRouter::Mode::Infer; });
  router.set_hard_blend(true);
  const auto unrolled =
      run(router, x0, labels, [](int k) { return k == 0 ? L2cRouter::Mode::Fill : L2cRouter::Mode::Unroll; });
  router.set_hard_blend(false);
  const auto soft =
      run(router, x0, labels, [](int k) { return k == 0 ? L2cRouter::Mode::Fill : L2cRouter::Mode::Unroll; });
  const auto full = run(router, x0, labels, [](int) { return L2cRouter::Mode::Fill; });
  // A site reused at two consecutive steps exists, so the test sees caches older than a step.
  const auto reuse = (logits.sigmoid() <= 0.5).slice(0, 1);
  BOOST_REQUIRE((reuse.slice(0, 0, kSteps - 2) & reuse.slice(0, 1)).any().item<bool>());
  BOOST_TEST_MESSAGE("|hard unroll - inference| " << cachelab::testing::max_abs_diff(unrolled, infer) << ", |soft - inference| "
                                                  << cachelab::testing::max_abs_diff(soft, infer) << ", |full - inference| "
                                                  << cachelab::testing::max_abs_diff(full, infer));
  BOOST_CHECK_SMALL(cachelab::testing::max_abs_diff(unrolled, infer), 1e-5);
  BOOST_CHECK_GT(cachelab::testing::max_abs_diff(full, infer), 1e-3);
  BOOST_CHECK_GT(cachelab::testing::max_abs_diff(soft, infer), 1e-4);  // the relaxation is not the decision
}

BOOST_AUTO_TEST_CASE(the_image_error_proxy_equals_separate_runs_and_its_weights_are_positive) {
  for (int full_every : {0, 2}) {
    L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 6, 6, 2);
    L2cTrainOptions o = options();
    o.full_every = full_every;
    HarmonicaTrainer trainer(model, sampler, guidance, pairs, 6, o);
    {
      c10::NoGradGuard g;
      auto gen = at::detail::createCPUGenerator(9);
      trainer.logits().copy_(at::randn({kSteps, depth, 2}, gen));
    }
    const auto lambda = trainer.image_error_proxy();
    // Reference: one run per routed step i, the router (relaxed) before i, full from i on.
    const auto& routed = trainer.base().routed_steps();
    L2cRouter router(trainer.logits().detach(), L2cOptions{});
    const auto x0 = pairs.x[0].narrow(0, 0, o.proxy_samples), labels = pairs.labels.narrow(0, 0, o.proxy_samples);
    auto routed_before = [&](int64_t limit) {
      return run(router, x0, labels, [&](int k) {
        const bool r = std::find(routed.begin(), routed.end(), k) != routed.end();
        return r && k < limit ? L2cRouter::Mode::Unroll : L2cRouter::Mode::Fill;
      });
    };
    double top = 0;
    std::vector<double> want(kSteps, 0.0);
    for (size_t j = 0; j < routed.size(); ++j) {
      const auto next = j + 1 < routed.size() ? routed[j + 1] : kSteps;
      want[size_t(routed[j])] = (routed_before(next) - routed_before(routed[j])).to(at::kDouble).pow(2).mean().item<double>();
      top = std::max(top, want[size_t(routed[j])]);
    }
    BOOST_REQUIRE_GT(top, 0.0);
    for (int i = 0; i < kSteps; ++i) {
      BOOST_TEST_MESSAGE("full_every " << full_every << " step " << i << ": proxy " << lambda[i].item<double>()
                                       << ", separate runs " << want[size_t(i)]);
      BOOST_CHECK_SMALL(lambda[i].item<double>() - want[size_t(i)], 1e-4 * top);
    }
    trainer.refresh_weights();
    const auto w = trainer.weights();
    double mean = 0;
    for (int64_t i : routed) mean += lambda[i].item<double>() / double(routed.size());
    for (int i = 0; i < kSteps; ++i) {
      const bool r = std::find(routed.begin(), routed.end(), i) != routed.end();
      const double wi = w[i].item<double>();
      BOOST_CHECK(std::isfinite(wi));
      if (!r) BOOST_CHECK_EQUAL(wi, 0.0);
      else BOOST_CHECK_CLOSE(wi, std::max(lambda[i].item<double>() / mean, 1e-3), 1e-9);
      if (r) BOOST_CHECK_GT(wi, 0.0);
    }
  }
}

BOOST_AUTO_TEST_CASE(weights_are_refreshed_at_the_stated_interval) {
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 6, 6, 3);
  L2cTrainOptions o = options();
  o.refresh_every = 3;
  HarmonicaTrainer trainer(model, sampler, guidance, pairs, 6, o);
  std::vector<at::Tensor> seen;
  for (int it = 1; it <= 10; ++it) {
    trainer.iterate();
    if (trainer.refreshes().size() > seen.size()) seen.push_back(trainer.weights().clone());
    BOOST_CHECK(at::isfinite(trainer.weights()).all().item<bool>());
  }
  BOOST_CHECK((trainer.refreshes() == std::vector<int>{1, 4, 7, 10}));
  BOOST_REQUIRE_EQUAL(seen.size(), 4u);
  for (size_t k = 1; k < seen.size(); ++k)  // the router moved in between: the proxy follows it
    BOOST_CHECK_MESSAGE(!at::allclose(seen[k], seen[k - 1], 1e-6, 0), "refresh " << k << " gave the same weights");
  // refresh_every 0: never measured, uniform weights at the routed steps.
  o.refresh_every = 0;
  HarmonicaTrainer uniform(model, sampler, guidance, pairs, 6, o);
  for (int it = 0; it < 4; ++it) uniform.iterate();
  BOOST_CHECK(uniform.refreshes().empty());
  BOOST_CHECK(at::equal(uniform.weights().slice(0, 1), at::ones({kSteps - 1}, at::kDouble)));
  BOOST_CHECK_EQUAL(uniform.weights()[0].item<double>(), 0.0);
}

BOOST_AUTO_TEST_CASE(gradients_reach_one_router_row_per_iteration_and_nothing_else) {
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 6, 6, 4);
  std::vector<at::Tensor> before;
  for (auto& [name, t] : model.named_tensors()) before.push_back(t.detach().clone());
  for (const char* teacher : {"input", "trajectory"}) {
    for (int full_every : {0, 2}) {
      L2cTrainOptions o = options();
      o.teacher = teacher;
      o.full_every = full_every;
      HarmonicaTrainer trainer(model, sampler, guidance, pairs, 6, o);
      const auto& routed = trainer.base().routed_steps();
      for (size_t it = 0; it < 2 * routed.size(); ++it) {  // two unrolls
        const auto logits_before = trainer.logits().detach().clone();
        trainer.iterate();
        const int step = trainer.last_step();
        BOOST_CHECK_EQUAL(step, routed[it % routed.size()]);  // the routed steps in order, then a new unroll
        const auto g = trainer.logits().grad();
        BOOST_REQUIRE(g.defined());
        BOOST_CHECK(at::isfinite(g).all().item<bool>());
        for (int i = 0; i < kSteps; ++i) {
          const bool moved = !at::equal(logits_before[i], trainer.logits().detach()[i]);
          const double gmax = g[i].abs().max().item<double>();
          BOOST_CHECK_MESSAGE(moved == (i == step), teacher << " full_every " << full_every << " iteration " << it
                                                            << ": row " << i << (moved ? " moved" : " did not move"));
          if (i != step) BOOST_CHECK_EQUAL(gmax, 0.0);
          else BOOST_CHECK_GT(g[i].abs().min().item<double>(), 0.0);
        }
      }
    }
  }
  size_t k = 0;
  for (auto& [name, t] : model.named_tensors()) {
    BOOST_CHECK_MESSAGE(!t.requires_grad(), name << " requires grad");
    BOOST_CHECK_MESSAGE(!t.grad().defined(), name << " got a gradient");
    BOOST_CHECK_MESSAGE(at::equal(t, before[k++]), name << " changed");
  }
}

BOOST_AUTO_TEST_CASE(the_objective_falls_over_a_few_iterations) {
  // 6 training trajectories, 2 held out. The held-out unrolled objective (weights fixed:
  // measured once before training) before and after 60 iterations (12 unrolls), with the
  // output error alone (lambda 0) and with both terms of equal weight at the start.
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 8, 8, 1);
  const double margin = 0.8;  // the loss must end at least 20% lower
  for (const char* teacher : {"input", "trajectory"}) {
    L2cTrainOptions o = options();
    o.teacher = teacher;
    double lambda = 0;
    for (int pass = 0; pass < 2; ++pass) {
      o.lambda = lambda;
      HarmonicaTrainer trainer(model, sampler, guidance, pairs, 6, o);
      trainer.refresh_weights();
      const auto before = trainer.evaluate(6, 2);
      for (int i = 0; i < 60; ++i) trainer.iterate();
      const auto after = trainer.evaluate(6, 2);
      BOOST_TEST_MESSAGE("teacher " << teacher << ", lambda " << o.lambda << ": held-out loss " << before.total
                                    << " -> " << after.total << " (mse " << before.mse << " -> " << after.mse
                                    << ", mean score " << before.reg << " -> " << after.reg << ")");
      BOOST_REQUIRE_GT(before.mse, 0.0);
      BOOST_CHECK_LT(after.total, margin * before.total);
      lambda = before.mse / before.reg;
    }
  }
}

BOOST_AUTO_TEST_CASE(the_trained_router_runs_as_an_l2c_cache) {
  cachelab::testing::TempDir dir;
  L2cTrainOptions o = options();
  o.trajectories = 4;
  o.eval_trajectories = 2;
  o.pool_batch = 6;
  o.iterations = 7;
  o.refresh_every = 5;
  o.threads = 1;
  o.output = dir.file("router.safetensors");
  o.log = dir.file("log.h5");
  const int threads = at::get_num_threads();
  train_l2c(model, sampler, o, "objective: harmonica\n");
  at::set_num_threads(threads);
  std::map<std::string, std::string> meta;
  const auto logits = load_l2c_router(o.output, &meta);
  BOOST_CHECK(logits.sizes() == at::IntArrayRef({kSteps, depth, 2}));
  BOOST_CHECK(meta["objective"].rfind("HarmoniCa", 0) == 0);
  BOOST_CHECK_EQUAL(meta["iterations"], "7");
  register_components();
  ConfigNode node = parse_config_string("type: l2c\nfull_every: 0\nrouter: " + o.output + "\n", "exp.yaml");
  BuildContext ctx;
  ctx.sites = &model.sites();
  auto cache = caches().build(node, nullptr, ctx);
  RunOptions run;
  run.samples = 2;
  run.batch = 2;
  run.probe_samples = 2;
  run.cfg_scale = kScale;
  const auto t = cachelab::testing::run_image(model, sampler, {cache.get()}, run, nullptr, nullptr);
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(options_validate_and_round_trip) {
  const std::string yaml =
      "objective: harmonica\nteacher: trajectory\nrefresh_every: 25\nproxy_samples: 4\ntrajectories: 16\n"
      "lambda: 0.001\n";
  const auto o = read_checked<L2cTrainOptions>(parse_config_string(yaml, "train.yaml"), "train");
  BOOST_CHECK_EQUAL(o.objective, "harmonica");
  BOOST_CHECK_EQUAL(o.teacher, "trajectory");
  BOOST_CHECK_EQUAL(o.refresh_every, 25);
  BOOST_CHECK_EQUAL(o.proxy_samples, 4);
  auto write = [](const L2cTrainOptions& v) {
    ConfigNode out = ConfigNode::make_map("train");
    OptionWriter w(out);
    L2cTrainOptions copy = v;
    copy.fields(w);
    return to_yaml(out);
  };
  const std::string first = write(o);
  const auto again = read_checked<L2cTrainOptions>(parse_config_string(first, "again.yaml"), "train");
  BOOST_CHECK_EQUAL(write(again), first);
  auto bad = [](const std::string& y, std::initializer_list<std::string> words) {
    cachelab::testing::check_error(
        [&] { read_checked<L2cTrainOptions>(parse_config_string(y, "train.yaml"), "train"); }, words);
  };
  bad("objective: harmonic\n", {"train.yaml:1", "objective", "harmonica"});
  bad("teacher: uncached\n", {"teacher", "input", "trajectory"});
  bad("refresh_every: -1\n", {"refresh_every", ">= 0"});
  bad("objective: harmonica\nproxy_samples: 20\ntrajectories: 16\n", {"proxy_samples", "[1, trajectories]"});
  bad("proxy_samples: 0\n", {"proxy_samples"});
  // The proxy's size matters to harmonica only: an l2c recipe with few trajectories reads.
  BOOST_CHECK_NO_THROW(read_checked<L2cTrainOptions>(parse_config_string("trajectories: 2\n", "l2c.yaml"), "train"));
}

BOOST_AUTO_TEST_SUITE_END()
