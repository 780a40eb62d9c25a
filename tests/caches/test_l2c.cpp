// Learning-to-Cache on a small random DiT: the training blend is exact at s = 1 and s = 0,
// gradients reach the router only, the objective falls, inference follows the
// thresholded scores exactly (decisions, signal and FLOPs), and bad routers are clear errors;
// on a small random U-Net (suite l2c_unet): the router routes the branch sites.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/fora.h"
#include "caches/l2c.h"
#include "caches/l2c_train.h"
#include "caches/none.h"
#include "framework/registries.h"
#include "models/samplers.h"
#include "tests/test_util.h"
#include "tools/components.h"

using namespace cachelab;

namespace {

constexpr int kSteps = 6;
constexpr double kScale = 2.0;  // guidance: the model batch is twice the samples

// A run of two samples at the tests' guidance.
RunOptions two_samples() {
  RunOptions run;
  run.samples = run.batch = run.probe_samples = 2;
  run.cfg_scale = kScale;
  return run;
}

struct Fixture {
  Dit model{cachelab::testing::tiny_dit_options()};
  DdimSampler sampler{cachelab::testing::ddim_options(kSteps)};
  CfgGuidance guidance{CfgGuidanceOptions{}};
  int depth = cachelab::testing::tiny_dit_options().depth;
  Fixture() { cachelab::testing::randomize(model); }

  at::Tensor eval(Hooks& hooks, const at::Tensor& x, double t) {
    Cond cond;
    cond.labels = at::arange(x.size(0), at::kLong);
    return guidance.eval(model, x, at::full({x.size(0)}, t, at::kFloat), cond, kScale, hooks);
  }
  std::vector<int> sublayer_sites() const {
    std::vector<int> s;
    for (size_t i = 0; i < model.sites().size(); ++i)
      if (model.sites()[i].kind == SiteKind::Attn || model.sites()[i].kind == SiteKind::Mlp) s.push_back(int(i));
    return s;
  }
  L2cTrainOptions train_options() const {
    L2cTrainOptions o;
    o.cfg_scale = kScale;
    o.batch_size = 6;
    o.lr = 0.1;
    o.lambda = 0.02;
    o.init_logit = 1.0;
    return o;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(l2c, Fixture)

BOOST_AUTO_TEST_CASE(training_blend_is_the_uncached_output_at_s1_and_the_cached_one_at_s0) {
  auto gen = at::detail::createCPUGenerator(5);
  auto x0 = at::randn({3, 1, 8, 8}, gen), x1 = at::randn({3, 1, 8, 8}, gen);
  const double t0 = 800, t1 = 600;
  PassThroughHooks plain(model.linears());
  const auto uncached = eval(plain, x1, t1);
  // The all-cached output, made independently: FORA with interval 2 reuses every attn and
  // mlp output of step 0 at step 1.
  ForaOptions fo;
  fo.interval = 2;
  ForaPolicy fora(fo);
  LayerHooks fora_hooks(model, {&fora});
  fora_hooks.begin_run(2);
  fora_hooks.begin_step({0, 2, 0, 0, 2, 800});
  eval(fora_hooks, x0, t0);
  fora_hooks.begin_step({1, 2, 0, 1, 2, 600});
  const auto cached = eval(fora_hooks, x1, t1);
  for (int s : sublayer_sites()) BOOST_REQUIRE_EQUAL(fora_hooks.decisions()[size_t(s)], uint8_t(Decision::Reuse));
  BOOST_REQUIRE_GT(cachelab::testing::max_abs_diff(cached, uncached), 1e-3);  // else the test could not tell them apart

  for (double logit : {1e4, -1e4}) {  // sigmoid is exactly 1, then exactly 0, in float32
    L2cRouter router(at::full({2, depth, 2}, logit, at::kFloat), L2cOptions{});
    LayerHooks hooks(model, {&router});
    hooks.begin_run(2);
    router.set_mode(L2cRouter::Mode::Fill);
    hooks.begin_step({0, 2, 0, 0, 2, 800});
    eval(hooks, x0, t0);
    router.set_mode(L2cRouter::Mode::Blend);
    hooks.begin_step({1, 2, 0, 1, 2, 600});
    const auto out = eval(hooks, x1, t1);
    for (int s : sublayer_sites()) BOOST_CHECK_EQUAL(hooks.decisions()[size_t(s)], uint8_t(Decision::Blend));
    const double err = cachelab::testing::max_abs_diff(out, logit > 0 ? uncached : cached);
    BOOST_TEST_MESSAGE("logit " << logit << ": max |blend - expected| = " << err);
    BOOST_CHECK_SMALL(err, 1e-6);
  }
}

BOOST_AUTO_TEST_CASE(gradients_reach_the_router_only) {
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 4, 4, 0);
  BOOST_CHECK_EQUAL(pairs.steps(), kSteps);
  std::vector<at::Tensor> before;
  for (auto& [name, t] : model.named_tensors()) before.push_back(t.detach().clone());
  L2cTrainer trainer(model, guidance, pairs, 4, train_options());
  const auto traj = at::tensor(std::vector<int64_t>{0, 1, 2, 3}, at::kLong);
  const auto step = at::tensor(std::vector<int64_t>{1, 3, 3, 4}, at::kLong);
  trainer.objective(traj, step, /*backward=*/true);
  for (auto& [name, t] : model.named_tensors()) {
    BOOST_CHECK_MESSAGE(!t.requires_grad(), name << " requires grad");
    BOOST_CHECK_MESSAGE(!t.grad().defined(), name << " got a gradient");
  }
  const auto g = trainer.logits().grad();
  BOOST_REQUIRE(g.defined());
  BOOST_CHECK(at::isfinite(g).all().item<bool>());
  // Only the rows of the pairs' steps receive gradient, and every entry of them does.
  for (int i = 0; i < kSteps; ++i) {
    const bool used = i == 1 || i == 3 || i == 4;
    const double norm = g[i].abs().min().item<double>(), mx = g[i].abs().max().item<double>();
    if (used) BOOST_CHECK_MESSAGE(norm > 0, "step " << i << ": a zero gradient entry");
    else BOOST_CHECK_MESSAGE(mx == 0, "step " << i << ": gradient " << mx << " without a pair there");
  }
  // An optimiser step moves the logits and leaves the backbone bit for bit.
  const auto logits_before = trainer.logits().detach().clone();
  auto gen = at::detail::createCPUGenerator(3);
  trainer.iterate(gen);
  BOOST_CHECK(!at::equal(logits_before, trainer.logits().detach()));
  size_t k = 0;
  for (auto& [name, t] : model.named_tensors()) BOOST_CHECK_MESSAGE(at::equal(t, before[k++]), name << " changed");
}

BOOST_AUTO_TEST_CASE(the_objective_falls_over_a_few_iterations) {
  // 6 training trajectories, 2 held out; the held-out objective is measured before and
  // after 30 iterations, once with the output error alone (lambda 0) and once with lambda
  // set so that both terms weigh the same at the start.
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 8, 8, 1);
  const double margin = 0.8;  // the loss must end at least 20% lower
  L2cTrainOptions o = train_options();
  double lambda = 0;
  for (int pass = 0; pass < 2; ++pass) {
    o.lambda = lambda;
    L2cTrainer trainer(model, guidance, pairs, 6, o);
    const auto before = trainer.evaluate(6, 2, false);
    auto gen = at::detail::createCPUGenerator(11);
    for (int i = 0; i < 30; ++i) trainer.iterate(gen);
    const auto after = trainer.evaluate(6, 2, false);
    BOOST_TEST_MESSAGE("lambda " << o.lambda << ": held-out loss " << before.total << " -> " << after.total << " (mse "
                                 << before.mse << " -> " << after.mse << ", mean score " << before.reg << " -> "
                                 << after.reg << ")");
    BOOST_REQUIRE_GT(before.mse, 0.0);
    BOOST_CHECK_LT(after.total, margin * before.total);
    lambda = before.mse / before.reg;
  }
}

BOOST_AUTO_TEST_CASE(inference_follows_the_thresholded_scores_exactly) {
  cachelab::testing::TempDir dir;
  auto gen = at::detail::createCPUGenerator(7);
  const auto logits = at::randn({kSteps, depth, 2}, gen) * 2;
  const std::string path = dir.file("router.safetensors");
  save_l2c_router(path, logits, {{"note", "test"}});
  const RunOptions run = two_samples();
  ReferenceTrace ref;
  NoCache none{NoCacheOptions{}};
  const auto ref_traj = cachelab::testing::run_image(model, sampler, {&none}, run, nullptr, &ref);
  double rest = 0;  // FLOPs per sample of every site but the sub-layers
  for (auto& s : model.sites())
    if (s.kind != SiteKind::Attn && s.kind != SiteKind::Mlp) rest += s.flops_per_sample;
  for (auto [threshold, full_every] : {std::pair{0.5, 0}, {0.7, 0}, {0.5, 2}}) {
    L2cOptions o;
    o.router = path;
    o.threshold = threshold;
    o.full_every = full_every;
    L2cRouter router(o);
    const auto t = cachelab::testing::run_image(model, sampler, {&router}, run, &ref, nullptr);
    double flops = 0;
    int reused = 0;
    for (int i = 0; i < kSteps; ++i) {
      flops += rest;
      for (int s : sublayer_sites()) {
        const Site& site = model.sites()[size_t(s)];
        const double logit = logits[i][site.block][site.kind == SiteKind::Mlp ? 1 : 0].item<double>();
        const double score = 1 / (1 + std::exp(-logit));
        const bool full = i == 0 || (full_every > 0 && i % full_every == 0);
        const bool compute = full || score > threshold;
        BOOST_CHECK_MESSAGE(t.steps[size_t(i)].decision[size_t(s)] == uint8_t(compute ? Decision::Compute : Decision::Reuse),
                            "step " << i << " " << site.name << " score " << score << " threshold " << threshold);
        if (!full) BOOST_CHECK_CLOSE(t.steps[size_t(i)].signal[size_t(s)], score, 1e-4);
        if (compute) flops += site.flops_per_sample;
        reused += !compute;
      }
    }
    BOOST_CHECK_GT(reused, 0);
    BOOST_CHECK_CLOSE(t.flops, flops * run.samples * 2 /* guidance doubles the batch */, 1e-9);
    BOOST_CHECK_LT(t.flops, ref_traj.flops);
    BOOST_CHECK(!at::equal(t.samples, ref.samples));
  }
}

BOOST_AUTO_TEST_CASE(bad_routers_and_options_are_clear_errors) {
  cachelab::testing::TempDir dir;
  L2cOptions o;
  o.router = dir.path + "/missing.safetensors";
  cachelab::testing::check_error([&] { L2cRouter r(o); },
                                 {"missing.safetensors", "not found", "cachelab train configs/train/l2c-dit-mnist.yaml"});
  // A router trained for another step count fails when bound to the run.
  o.router = dir.file("five.safetensors");
  save_l2c_router(o.router, at::zeros({5, depth, 2}), {});
  L2cRouter five(o);
  RunContext ctx;
  ctx.sites = &model.sites();
  ctx.steps = kSteps;
  cachelab::testing::check_error([&] { five.begin_run(ctx); }, {"5 sampling steps", "takes 6", "sampler.steps=6"});
  // ... and one for another depth.
  save_l2c_router(o.router, at::zeros({kSteps, depth + 1, 2}), {});
  L2cRouter deeper(o);
  cachelab::testing::check_error([&] { deeper.begin_run(ctx); }, {"blocks", "backbone has 4"});
  // Value rules at resolve time.
  register_components();
  cachelab::testing::check_error(
      [&] { caches().resolve(parse_config_string("type: l2c\nthreshold: 1.5\n", "exp.yaml")); },
      {"exp.yaml:2", "threshold", "[0, 1]"});
  cachelab::testing::check_error(
      [&] { caches().resolve(parse_config_string("type: l2c\nrouter: \"\"\n", "exp.yaml")); },
      {"router", "cachelab train configs/train/l2c-dit-mnist.yaml"});
}

BOOST_AUTO_TEST_SUITE_END()

// The router on a U-Net: its branch sites are routed (logits [T, levels, 1]), inference
// follows the thresholded scores with nested branches (an inner branch is not called while
// its outer one is reused), training reaches every branch logit, and routers for another
// layout, site list or weights are refused naming both sides.
namespace {

struct UnetFixture {
  Unet model{cachelab::testing::tiny_unet_options()};
  DdimSampler sampler{cachelab::testing::ddim_options(kSteps)};
  CfgGuidance guidance{CfgGuidanceOptions{}};
  Dit dit{cachelab::testing::tiny_dit_options()};
  UnetFixture() {
    cachelab::testing::randomize(model);
    cachelab::testing::randomize(dit);
  }
  std::vector<int> branch_sites() const {
    std::vector<int> s;
    for (size_t i = 0; i < model.sites().size(); ++i)
      if (model.sites()[i].kind == SiteKind::Branch) s.push_back(int(i));
    return s;
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(l2c_unet, UnetFixture)

BOOST_AUTO_TEST_CASE(the_layout_routes_the_branches_of_a_unet_and_the_sublayers_of_a_dit) {
  const L2cLayout u = l2c_layout(model.sites());
  const auto branches = branch_sites();
  BOOST_REQUIRE_EQUAL(branches.size(), 2u);  // the tiny U-Net has three levels
  BOOST_CHECK_EQUAL(u.name, "branch");
  BOOST_CHECK_EQUAL(u.rows, 2);
  BOOST_CHECK_EQUAL(u.kinds, 1);
  BOOST_CHECK_EQUAL(u.routed, 2);
  BOOST_CHECK_EQUAL(u.site_list(), "branches.0,branches.1");
  for (size_t i = 0; i < model.sites().size(); ++i) {
    const Site& s = model.sites()[i];
    // mid.attn is an attn site of the main stream, but a U-Net is routed at its branches.
    const int expected = s.kind == SiteKind::Branch ? s.block : -1;
    BOOST_CHECK_MESSAGE(u.slot[i] == expected, s.name << ": slot " << u.slot[i] << ", expected " << expected);
  }
  const L2cLayout d = l2c_layout(dit.sites());
  const int depth = cachelab::testing::tiny_dit_options().depth;
  BOOST_CHECK_EQUAL(d.name, "attn_mlp");
  BOOST_CHECK_EQUAL(d.rows, depth);
  BOOST_CHECK_EQUAL(d.kinds, 2);
  BOOST_CHECK_EQUAL(d.routed, 2 * depth);
  for (size_t i = 0; i < dit.sites().size(); ++i) {
    const Site& s = dit.sites()[i];
    const int expected = s.kind == SiteKind::Attn ? 2 * s.block : s.kind == SiteKind::Mlp ? 2 * s.block + 1 : -1;
    BOOST_CHECK_MESSAGE(d.slot[i] == expected, s.name << ": slot " << d.slot[i] << ", expected " << expected);
  }
  BOOST_CHECK_EQUAL(d.names[1], "blocks.0.mlp");
}

BOOST_AUTO_TEST_CASE(inference_follows_the_thresholded_scores_of_nested_branches) {
  cachelab::testing::TempDir dir;
  auto gen = at::detail::createCPUGenerator(13);
  const auto logits = at::randn({kSteps, 2, 1}, gen) * 2;
  const std::string path = dir.file("router.safetensors");
  const L2cLayout layout = l2c_layout(model.sites());
  save_l2c_router(path, logits, {{kL2cLayoutKey, layout.name}, {kL2cSitesKey, layout.site_list()}});
  const RunOptions run = two_samples();
  ReferenceTrace ref;
  NoCache none{NoCacheOptions{}};
  const auto ref_traj = cachelab::testing::run_image(model, sampler, {&none}, run, nullptr, &ref);
  const auto& sites = model.sites();
  int outer_reused = 0, inner_reused = 0;
  for (auto [threshold, full_every] : {std::pair{0.5, 0}, {0.3, 0}, {0.5, 2}}) {
    L2cOptions o;
    o.router = path;
    o.threshold = threshold;
    o.full_every = full_every;
    L2cRouter router(o);
    const auto t = cachelab::testing::run_image(model, sampler, {&router}, run, &ref, nullptr);
    double flops = 0;
    for (int i = 0; i < kSteps; ++i) {
      const bool full = i == 0 || (full_every > 0 && i % full_every == 0);
      // Per site: reused here (a routed branch below the threshold) and called at all (no
      // reused branch encloses it); sites come in forward order, parents first.
      std::vector<bool> reused(sites.size(), false), called(sites.size(), true);
      for (size_t k = 0; k < sites.size(); ++k) {
        const Site& s = sites[k];
        if (s.parent >= 0) called[k] = called[size_t(s.parent)] && !reused[size_t(s.parent)];
        if (s.kind == SiteKind::Branch && called[k] && !full) {
          const double score = 1 / (1 + std::exp(-logits[i][s.block][0].item<double>()));
          reused[k] = score <= threshold;
          BOOST_CHECK_CLOSE(t.steps[size_t(i)].signal[k], score, 1e-4);
        }
        const auto expected = !called[k] ? Decision::Skipped : reused[k] ? Decision::Reuse : Decision::Compute;
        if (s.kind == SiteKind::Branch) {
          BOOST_CHECK_MESSAGE(t.steps[size_t(i)].decision[k] == uint8_t(expected),
                              "step " << i << " " << s.name << ": decision " << int(t.steps[size_t(i)].decision[k])
                                      << ", expected " << int(expected));
          outer_reused += s.block == 0 && reused[k];
          inner_reused += s.block == 1 && reused[k];
        }
        if (called[k] && !reused[k]) flops += s.flops_per_sample;
      }
    }
    BOOST_CHECK_CLOSE(t.flops, flops * run.samples * 2 /* guidance doubles the batch */, 1e-9);
    BOOST_CHECK_LT(t.flops, ref_traj.flops);
    BOOST_CHECK(!at::equal(t.samples, ref.samples));
  }
  // The draws reuse each branch somewhere, so both paths were exercised.
  BOOST_CHECK_GT(outer_reused, 0);
  BOOST_CHECK_GT(inner_reused, 0);
}

BOOST_AUTO_TEST_CASE(training_reaches_every_branch_logit_of_the_pairs_steps) {
  L2cPairs pairs = sample_l2c_pairs(model, sampler, guidance, kScale, 4, 4, 0);
  L2cTrainOptions o;
  o.cfg_scale = kScale;
  o.batch_size = 4;
  o.init_logit = 0.5;
  L2cTrainer trainer(model, guidance, pairs, 4, o);
  BOOST_REQUIRE(trainer.logits().sizes() == at::IntArrayRef({kSteps, 2, 1}));
  const auto traj = at::tensor(std::vector<int64_t>{0, 1, 2, 3}, at::kLong);
  const auto step = at::tensor(std::vector<int64_t>{1, 3, 3, 5}, at::kLong);
  trainer.objective(traj, step, /*backward=*/true);
  const auto g = trainer.logits().grad();
  BOOST_REQUIRE(g.defined());
  for (int i = 0; i < kSteps; ++i) {
    const bool used = i == 1 || i == 3 || i == 5;
    const double mn = g[i].abs().min().item<double>(), mx = g[i].abs().max().item<double>();
    if (used) BOOST_CHECK_MESSAGE(mn > 0, "step " << i << ": a zero gradient entry");
    else BOOST_CHECK_MESSAGE(mx == 0, "step " << i << ": gradient " << mx << " without a pair there");
  }
  for (auto& [name, t] : model.named_tensors()) BOOST_CHECK_MESSAGE(!t.grad().defined(), name << " got a gradient");
}

BOOST_AUTO_TEST_CASE(a_router_for_another_backbone_is_refused) {
  cachelab::testing::TempDir dir;
  const int depth = cachelab::testing::tiny_dit_options().depth;
  const L2cLayout u = l2c_layout(model.sites());
  RunContext uctx, dctx;
  uctx.sites = &model.sites();
  dctx.sites = &dit.sites();
  uctx.steps = dctx.steps = kSteps;
  L2cOptions o;
  // A DiT router as written before layouts were recorded (no metadata) on the U-Net.
  o.router = dir.file("dit-legacy.safetensors");
  save_l2c_router(o.router, at::zeros({kSteps, depth, 2}), {});
  L2cRouter legacy(o);
  cachelab::testing::check_error([&] { legacy.begin_run(uctx); },
                                 {"dit-legacy.safetensors", "attn and mlp sub-layers", "layout attn_mlp",
                                  "layout branch", "branches.0,branches.1", "configs/train/l2c-unet-mnist.yaml"});
  legacy.begin_run(dctx);  // ... and still loads on a DiT
  // A U-Net router on the DiT.
  o.router = dir.file("unet.safetensors");
  save_l2c_router(o.router, at::zeros({kSteps, 2, 1}), {{kL2cLayoutKey, u.name}, {kL2cSitesKey, u.site_list()}});
  L2cRouter unet_router(o);
  cachelab::testing::check_error([&] { unet_router.begin_run(dctx); },
                                 {"unet.safetensors", "skip branches", "layout branch", "layout attn_mlp",
                                  "blocks.0.attn,blocks.0.mlp"});
  unet_router.begin_run(uctx);
  // Same layout, other sites (a U-Net of another shape).
  o.router = dir.file("other-sites.safetensors");
  save_l2c_router(o.router, at::zeros({kSteps, 2, 1}), {{kL2cLayoutKey, u.name}, {kL2cSitesKey, "branches.0"}});
  L2cRouter other_sites(o);
  cachelab::testing::check_error([&] { other_sites.begin_run(uctx); },
                                 {"routes the sites branches.0", "this backbone's are branches.0,branches.1"});
  // Same sites, other weights.
  o.router = dir.file("other-weights.safetensors");
  save_l2c_router(o.router, at::zeros({kSteps, 2, 1}),
                  {{kL2cLayoutKey, u.name}, {kL2cSitesKey, u.site_list()}, {kL2cBackboneDigestKey, "0123456789abcdef"}});
  L2cRouter other_weights(o);
  uctx.backbone_digest = "fedcba9876543210";
  cachelab::testing::check_error([&] { other_weights.begin_run(uctx); },
                                 {"digest 0123456789abcdef", "digest fedcba9876543210"});
  uctx.backbone_digest = "0123456789abcdef";
  other_weights.begin_run(uctx);
  // The U-Net's layout with two logits per row.
  o.router = dir.file("kinds.safetensors");
  save_l2c_router(o.router, at::zeros({kSteps, 2, 2}), {{kL2cLayoutKey, u.name}});
  L2cRouter kinds(o);
  cachelab::testing::check_error([&] { kinds.begin_run(uctx); }, {"2 logits per row", "needs 1"});
}

BOOST_AUTO_TEST_SUITE_END()
