// FoCa, PAB, RAS and Temporal Delta Cache: each one's defining behaviour on tiny inputs
// (driving the layer by hand where the property is about one call), then a run of the
// tiny DiT showing it really hits, with a finite decision signal.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <functional>
#include <tuple>

#include "caches/delta_cache.h"
#include "caches/foca.h"
#include "caches/fora.h"
#include "caches/pab.h"
#include "caches/ras.h"
#include "caches/taylorseer.h"
#include "models/tiny_video.h"
#include "models/video_pipeline.h"
#include "tests/caches/fixture.h"

using namespace cachelab;

namespace {

double rel_err(const at::Tensor& a, const at::Tensor& truth) {
  return ((a - truth).abs().max() / truth.abs().max()).item<double>();
}

// Drives one layer by hand over a site table: one call of site `site` at step `step`
// with `input`, where `compute` stands for the rest of the stack.
struct Harness {
  std::vector<Site> sites;
  RunContext ctx;
  StepIndex step;
  std::vector<std::vector<double>> extra;
  explicit Harness(std::vector<Site> s, int steps) : sites(std::move(s)) {
    ctx.sites = &sites;
    ctx.steps = steps;
    ctx.inner_steps = steps;
  }
  void begin(SiteLayer& layer, int index, int64_t timestep = 0) {
    step.index = step.inner = index;
    step.count = step.inner_count = ctx.steps;
    step.timestep = timestep;
    layer.begin_step(step);
  }
  // Returns the output and the decision the layer logged (Compute when it called next on every row).
  std::pair<at::Tensor, Decision> call(SiteLayer& layer, int site, const at::Tensor& input, const Next& compute) {
    SiteCall c;
    c.site = site;
    c.info = &sites[size_t(site)];
    c.step = &step;
    c.inputs = {input};
    SiteLog log;
    log.site = site;
    c.log = &log;
    bool computed = false;
    auto out = layer.at(c, [&](const SiteCall& inner) {
      computed = true;
      return compute(inner);
    });
    return {out[0], computed ? Decision::Compute : log.decision};
  }
};

Site site_of(const char* name, SiteKind kind, int block, int stream = 0, bool rows = false) {
  Site s;
  s.name = name;
  s.kind = kind;
  s.block = block;
  s.stream = stream;
  s.rows = rows;
  s.flops_per_sample = 1.0;
  return s;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(foca)

BOOST_AUTO_TEST_CASE(heun_calibration_is_exact_on_quadratics_once_four_points_are_known) {
  const cachelab::testing::RandomPolynomial f;
  // Unevenly spaced computed steps (a warm-up step, then interval 4), forecast 3 steps ahead.
  for (int degree = 1; degree <= 3; ++degree) {
    FocaPolicy::History h;
    for (double s : {0.0, 1.0, 5.0, 9.0}) h.add(s, f(s, degree));
    const double heun = rel_err(FocaPolicy::forecast(h, 12, "heun"), f(12, degree));
    const double euler = rel_err(FocaPolicy::forecast(h, 12, "euler"), f(12, degree));
    if (degree <= 2) BOOST_CHECK_MESSAGE(heun < 1e-12, "heun, degree " << degree << ": " << heun);
    else BOOST_CHECK_MESSAGE(heun > 1e-6, "heun should not be exact at degree 3");
    // The forecast alone (an Euler step on the BDF2 slope) is exact for lines only.
    if (degree == 1) BOOST_CHECK_MESSAGE(euler < 1e-12, "euler on a line: " << euler);
    else BOOST_CHECK_MESSAGE(euler > 1e-6, "euler should not be exact at degree " << degree);
  }
  // With two points the slope is the secant: exact on lines; with one, a copy.
  FocaPolicy::History two, one;
  two.add(2, f(2, 1)), two.add(6, f(6, 1)), one.add(3, f(3, 1));
  BOOST_CHECK_LT(rel_err(FocaPolicy::forecast(two, 8, "heun"), f(8, 1)), 1e-12);
  BOOST_CHECK(at::equal(FocaPolicy::forecast(one, 5, "heun"), f(3, 1)));
}

BOOST_FIXTURE_TEST_CASE(predicts_between_full_steps_with_foras_flops, Fixture) {
  FocaOptions o;
  o.interval = 3;
  o.warmup_steps = 0;
  FocaPolicy foca(o);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  TaylorSeerOptions to;
  to.interval = 3;
  to.warmup_steps = 0;
  TaylorSeerPolicy ts(to);
  auto t = with(foca), f = with(fora), s = with(ts);
  const int mlp = site("blocks.2.mlp");
  for (size_t i = 0; i < t.steps.size(); ++i) {
    // Steps 1, 2 have one computed point (a copy); from step 4 on a slope exists.
    const auto want = i % 3 == 0 ? Decision::Compute : i < 3 ? Decision::Reuse : Decision::Predict;
    BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(want));
  }
  BOOST_CHECK_EQUAL(t.flops, f.flops);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK(!at::equal(t.samples, f.samples));
  BOOST_TEST_MESSAGE("tiny DiT, interval 3: final rel-L1 error vs reference, foca " << t.steps.back().err_ref_rel_l1
                     << ", taylorseer order 2 " << s.steps.back().err_ref_rel_l1 << ", fora "
                     << f.steps.back().err_ref_rel_l1);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(pab)

BOOST_AUTO_TEST_CASE(each_attention_type_broadcasts_over_its_own_range_inside_its_window) {
  Harness h({site_of("spatial", SiteKind::Attn, 0, 0), site_of("cross", SiteKind::Attn, 0, 1),
             site_of("mlp", SiteKind::Mlp, 0, 0)},
            20);
  PabOptions o;
  o.spatial_range = 2, o.spatial_timesteps = {200, 800};
  o.cross_range = 4, o.cross_timesteps = {100, 900};
  o.mlp_range = 3, o.mlp_timesteps = {300, 700};
  PabPolicy pab(o);
  pab.begin_run(h.ctx);
  const std::vector<int> ranges = {2, 4, 3};
  const std::vector<std::pair<int, int>> windows = {{200, 800}, {100, 900}, {300, 700}};
  std::vector<int> last(3, -100), reused(3, 0);
  for (int i = 0; i < 20; ++i) {
    const int64_t t = 950 - 50 * i;  // 950, 900, ... 0
    h.begin(pab, i, t);
    for (int s = 0; s < 3; ++s) {
      auto x = at::full({1, 2, 2}, double(100 * i + s));
      auto [out, d] = h.call(pab, s, x, [](const SiteCall& c) { return Tensors{c.inputs[0] * 2}; });
      const bool in_window = t >= windows[size_t(s)].first && t <= windows[size_t(s)].second;
      const bool want_reuse = in_window && i - last[size_t(s)] < ranges[size_t(s)];
      BOOST_CHECK_MESSAGE((d == Decision::Reuse) == want_reuse, "site " << s << " step " << i << " t " << t);
      if (d == Decision::Reuse) {
        BOOST_CHECK(at::equal(out, at::full({1, 2, 2}, double(2 * (100 * last[size_t(s)] + s)))));
        ++reused[size_t(s)];
      } else {
        last[size_t(s)] = i;
      }
    }
  }
  // The pyramid: the wider the range, the more reuse (cross > spatial despite their windows).
  BOOST_TEST_MESSAGE("pab reuses over 20 steps: spatial " << reused[0] << ", cross " << reused[1] << ", mlp "
                                                          << reused[2]);
  BOOST_CHECK_GT(reused[1], reused[0]);
  BOOST_CHECK_GT(reused[2], 0);
}

BOOST_FIXTURE_TEST_CASE(broadcasts_dit_attention_only_in_the_window, Fixture) {
  PabOptions o;  // spatial range 2 in [100, 800]; MLPs always computed
  PabPolicy pab(o);
  auto t = with(pab);
  const int attn = site("blocks.1.attn"), mlp = site("blocks.1.mlp");
  int last = -100, reused = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    const bool want = s.t >= 100 && s.t <= 800 && int(i) - last < 2;
    BOOST_CHECK_MESSAGE((s.decision[attn] == uint8_t(Decision::Reuse)) == want, "step " << i << " t " << s.t);
    BOOST_CHECK_EQUAL(s.decision[mlp], uint8_t(Decision::Compute));
    if (want) ++reused;
    else last = int(i);
  }
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK_GT(t.steps.back().err_ref_rel_l1, 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ras)

BOOST_AUTO_TEST_CASE(selection_leaves_out_the_high_ratio_share_from_the_top) {
  auto scores = at::tensor({5.0, 1.0, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0}, at::kFloat);
  auto ids = [](const at::Tensor& t) { return std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel()); };
  auto [a1, l1] = RasPolicy::select(scores, 4, 1.0);  // leave out the 4 highest: 8, 7, 6, 5
  BOOST_CHECK((ids(l1) == std::vector<int64_t>{0, 2, 4, 6}));
  BOOST_CHECK((ids(a1) == std::vector<int64_t>{1, 3, 5, 7}));
  auto [a0, l0] = RasPolicy::select(scores, 4, 0.0);  // the 4 lowest: 1, 2, 3, 4
  BOOST_CHECK((ids(l0) == std::vector<int64_t>{1, 3, 5, 7}));
  auto [ah, lh] = RasPolicy::select(scores, 4, 0.5);  // 2 lowest (1, 2) and 2 highest (8, 7)
  BOOST_CHECK((ids(lh) == std::vector<int64_t>{1, 2, 4, 5}));
  BOOST_CHECK_EQUAL(ah.size(0), 4);
}

BOOST_AUTO_TEST_CASE(token_scores_follow_row_major_patches) {
  // A 4x4 two-channel output cut into 2x2 patches; patch (row 1, col 0) = token 2 is loud.
  auto o = at::zeros({1, 2, 4, 4});
  o.index_put_({0, 0, at::indexing::Slice(2, 4), at::indexing::Slice(0, 2)}, 3.0);
  o.index_put_({0, 1, at::indexing::Slice(2, 4), at::indexing::Slice(0, 2)}, 4.0);
  auto l2 = RasPolicy::token_scores(o, 4, "l2norm");
  BOOST_CHECK_CLOSE(l2[2].item<double>(), 5.0, 1e-5);
  BOOST_CHECK_SMALL(l2.sum().item<double>() - 5.0, 1e-5);
  auto sd = RasPolicy::token_scores(o, 4, "std");
  BOOST_CHECK_CLOSE(sd[2].item<double>(), std::sqrt(0.5), 1e-4);  // std of {3, 4} (unbiased)
  cachelab::testing::check_error([&] { RasPolicy::token_scores(o.narrow(1, 0, 1), 4, "std"); }, {"metric std", "l2norm"});
}

BOOST_AUTO_TEST_CASE(left_out_tokens_keep_the_previous_noise_and_sites_compute_the_active_rows) {
  Harness h({site_of("model", SiteKind::Model, -1), site_of("attn", SiteKind::Attn, 0, 0, /*rows=*/true)}, 3);
  h.sites[1].parent = 0;
  RasOptions o;
  o.start_step = 1, o.reset_steps = {}, o.sample_ratio = 0.5, o.starvation_scale = 0;
  RasPolicy ras(o);
  ras.begin_run(h.ctx);
  // Step k outputs patch j (of 4 patches of a 4x4 image) at level (j + 1) x 10^k; the
  // loudest two patches (2, 3) are left out after step 0 (high_ratio 1).
  auto output = [](int k) {
    auto o = at::zeros({1, 1, 4, 4});
    for (int j = 0; j < 4; ++j)
      o.index_put_({0, 0, at::indexing::Slice(2 * (j / 2), 2 * (j / 2) + 2), at::indexing::Slice(2 * (j % 2), 2 * (j % 2) + 2)},
                   (j + 1) * std::pow(10.0, k));
    return o;
  };
  std::vector<at::Tensor> outs;
  std::vector<int64_t> rows_seen;
  for (int k = 0; k < 2; ++k) {
    h.begin(ras, k);
    auto [out, d] = h.call(ras, 0, at::zeros({1, 1, 4, 4}), [&](const SiteCall&) {
      // The model's body: the attention site, 4 tokens of width 3.
      auto [a, ad] = h.call(ras, 1, at::ones({1, 4, 3}), [&](const SiteCall& c) {
        rows_seen.push_back(c.rows.defined() ? c.rows.size(0) : 4);
        if (c.rows.defined()) BOOST_CHECK((c.rows.equal(at::tensor({0, 1}, at::kLong))));
        return Tensors{at::full({1, c.rows.defined() ? c.rows.size(0) : 4, 3}, double(k + 1))};
      });
      if (k == 1) {  // rows 0, 1 fresh (2), rows 2, 3 from step 0 (1)
        BOOST_CHECK(at::equal(a.select(1, 0), at::full({1, 3}, 2.0)));
        BOOST_CHECK(at::equal(a.select(1, 3), at::full({1, 3}, 1.0)));
      }
      return Tensors{output(k)};
    });
    outs.push_back(out);
  }
  BOOST_CHECK((rows_seen == std::vector<int64_t>{4, 2}));
  // Step 1: tokens 0, 1 (top half) are the new output; tokens 2, 3 (bottom half) step 0's.
  auto top = outs[1].narrow(2, 0, 2), bottom = outs[1].narrow(2, 2, 2);
  BOOST_CHECK(at::equal(top, output(1).narrow(2, 0, 2)));
  BOOST_CHECK(at::equal(bottom, output(0).narrow(2, 2, 2)));
}

BOOST_FIXTURE_TEST_CASE(sample_ratio_one_is_the_reference_bit_for_bit, Fixture) {
  RasOptions o;
  o.sample_ratio = 1.0;
  RasPolicy ras(o);
  auto t = with(ras);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
}

BOOST_FIXTURE_TEST_CASE(ras_steps_compute_the_sample_ratio_and_flops_count_it, Fixture) {
  RasOptions o;
  o.sample_ratio = 0.5;  // 8 of the tiny DiT's 16 tokens
  o.start_step = 2;
  o.reset_steps = {6};
  RasPolicy ras(o);
  auto t = with(ras);
  const int attn = site("blocks.1.attn"), mlp = site("blocks.3.mlp"), model_site = site("model");
  int ras_steps = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const bool partial = i >= 2 && i != 6;
    ras_steps += partial;
    const auto want = partial ? Decision::Partial : Decision::Compute;
    BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(want));
    BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(want));
    BOOST_CHECK_CLOSE(t.steps[i].site_extra[0][size_t(mlp)], partial ? 0.5 : 1.0, 1e-12);
    // The focus score is logged at the model site when the next step's tokens are chosen.
    const bool chooses = i + 1 >= 2 && i + 1 != 6 && i + 1 < t.steps.size();
    if (chooses) BOOST_CHECK_MESSAGE(std::isfinite(t.steps[i].signal[size_t(model_site)]), "signal at step " << i);
  }
  double expected = 0;
  const double T = double(t.steps.size());
  for (auto& s : model.sites()) {
    const bool tok = s.kind == SiteKind::Attn || s.kind == SiteKind::Mlp;
    const double half = s.fixed_flops_per_sample + (s.flops_per_sample - s.fixed_flops_per_sample) * 0.5;
    expected += tok ? (T - ras_steps) * s.flops_per_sample + ras_steps * half : T * s.flops_per_sample;
  }
  BOOST_CHECK_CLOSE(t.flops, expected * 4 * 2, 1e-9);
  BOOST_CHECK(std::isfinite(t.steps.back().err_ref_rel_l1));
  BOOST_CHECK_GT(t.steps.back().err_ref_rel_l1, 0.0);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(delta_cache)

BOOST_AUTO_TEST_CASE(a_skipped_block_adds_its_cached_residual_to_the_new_input) {
  Harness h({site_of("blocks.0", SiteKind::Block, 0)}, 8);
  DeltaCacheOptions o;
  o.threshold = 0.05, o.warmup_steps = 2, o.max_consecutive = 1;
  DeltaCachePolicy dc(o);
  dc.begin_run(h.ctx);
  const auto base = at::randn({2, 3, 4}, at::kDouble);
  // Residual r(k) = base x (1 + 0.01 k) until step 5, then it jumps (x 3).
  auto residual = [&](int k) { return base * (k < 5 ? 1 + 0.01 * k : 3.0); };
  std::vector<Decision> got;
  at::Tensor last_r;
  for (int k = 0; k < 8; ++k) {
    h.begin(dc, k);
    auto x = at::randn({2, 3, 4}, at::kDouble);
    auto [out, d] = h.call(dc, 0, x, [&](const SiteCall& c) { return Tensors{c.inputs[0] + residual(k)}; });
    got.push_back(d);
    if (d == Decision::Reuse) BOOST_CHECK(at::allclose(out, x + last_r, 0, 1e-15));
    else last_r = residual(k);
  }
  // 0, 1 warm-up (signal at 1: 0.01); 2 skipped; 3 computed (cap 1; signal 0.02); 4 skipped;
  // 5 computed (cap): the jump makes the signal 1.9, so 6 is computed (signal 0) and 7 skipped.
  const std::vector<Decision> want = {Decision::Compute, Decision::Compute, Decision::Reuse,   Decision::Compute,
                                      Decision::Reuse,   Decision::Compute, Decision::Compute, Decision::Reuse};
  for (size_t k = 0; k < want.size(); ++k)
    BOOST_CHECK_MESSAGE(got[k] == want[k], "step " << k << ": " << decision_name(got[k]) << " vs "
                                                   << decision_name(want[k]));
}

BOOST_FIXTURE_TEST_CASE(zero_threshold_is_the_reference, Fixture) {
  DeltaCacheOptions o;
  o.threshold = 0.0;
  DeltaCachePolicy dc(o);
  BOOST_CHECK(at::equal(with(dc).samples, ref.samples));
}

BOOST_FIXTURE_TEST_CASE(stable_blocks_are_skipped_with_finite_signal_within_the_cap, Fixture) {
  DeltaCacheOptions o;
  o.threshold = 1e9;  // every residual counts as stable: only warm-up and the cap force computation
  o.warmup_steps = 2;
  o.max_consecutive = 2;
  DeltaCachePolicy dc(o);
  auto t = with(dc);
  const int block = site("blocks.2"), attn = site("blocks.2.attn");
  int run = 0, reused = 0;
  for (size_t i = 0; i < t.steps.size(); ++i) {
    const auto& s = t.steps[i];
    const bool reuse = s.decision[block] == uint8_t(Decision::Reuse);
    if (i < 2) BOOST_CHECK(!reuse);
    if (reuse) {
      BOOST_CHECK_MESSAGE(std::isfinite(s.signal[block]), "signal at step " << i);
      BOOST_CHECK_EQUAL(s.decision[attn], uint8_t(Decision::Skipped));
    }
    run = reuse ? run + 1 : 0;
    reused += reuse;
    BOOST_CHECK_LE(run, o.max_consecutive);
  }
  BOOST_CHECK_GT(reused, 0);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_SUITE_END()

// The methods select sites by tags, so they run on the frame-causal video transformer too
// (3 chunks of 2 frames, 4 steps each): each reuses or forecasts there, and every chunk
// (a new trajectory) starts by computing.
BOOST_AUTO_TEST_SUITE(zoo_b_on_video)

BOOST_AUTO_TEST_CASE(foca_pab_and_delta_cache_hit_on_tiny_video_and_ras_refuses_its_attention) {
  TinyVideo model{TinyVideoOptions{}};
  cachelab::testing::randomize(model, 3, 0.1);
  VideoPipeline pipe{[] {
    VideoPipelineOptions o;
    o.num_chunks = 3;
    o.frames_per_chunk = 2;
    o.steps = 4;
    return o;
  }()};
  RunOptions run;
  run.samples = run.batch = run.probe_samples = 2;
  run.cfg_scale = 1;
  auto go = [&](SiteLayer& layer) {
    RunParts parts;
    parts.backbone = &model;
    parts.pipeline = &pipe;
    parts.layers = {&layer};
    return run_trajectory(parts, run, nullptr, nullptr);
  };
  FocaOptions fo;
  fo.interval = 2, fo.warmup_steps = 0;
  FocaPolicy foca(fo);
  PabOptions po;
  po.spatial_timesteps = {0, 1000};
  PabPolicy pab(po);
  DeltaCacheOptions dopt;
  dopt.threshold = 1e9, dopt.warmup_steps = 1, dopt.max_consecutive = 1;
  DeltaCachePolicy delta(dopt);
  const int attn = find_site(model.sites(), "layers.1.attn"), block = find_site(model.sites(), "layers.1");
  for (auto [layer, site, name] : {std::tuple<SiteLayer*, int, const char*>{&foca, attn, "foca"},
                                   {&pab, attn, "pab"}, {&delta, block, "delta_cache"}}) {
    auto t = go(*layer);
    BOOST_REQUIRE_EQUAL(t.steps.size(), size_t(12));
    int hits = 0;
    for (size_t i = 0; i < t.steps.size(); ++i) {
      const auto d = t.steps[i].decision[size_t(site)];
      if (i % 4 == 0) BOOST_CHECK_MESSAGE(d == uint8_t(Decision::Compute), name << " at the first step of chunk " << i / 4);
      hits += d == uint8_t(Decision::Reuse) || d == uint8_t(Decision::Predict);
    }
    BOOST_CHECK_MESSAGE(hits >= 3, name << " hits " << hits << " times");
    BOOST_CHECK_MESSAGE(at::isfinite(t.samples).all().item<bool>(), name);
  }
  RasPolicy ras{RasOptions{}};
  cachelab::testing::check_error([&] { go(ras); }, {"ras: site", "does not accept a token subset"});
}

BOOST_AUTO_TEST_SUITE_END()
