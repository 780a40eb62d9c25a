// Quantization primitives (quant/quantize.h) on known tensors, and the `ptq` ops layer on a
// small random DiT: calibration records the true ranges, timestep groups partition them,
// error grows as bits shrink, temporal linears stay exact when asked, stale or mismatched
// calibration files are refused, and the config validates and round-trips.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>

#include "framework/config.h"
#include "framework/error.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "framework/safetensors.h"
#include "models/samplers.h"
#include "quant/ptq.h"
#include "quant/quantize.h"
#include "quant/sixbit.h"
#include "tests/caches/fixture.h"
#include "tests/quant/quant_util.h"

using namespace cachelab;

namespace {

struct PtqFixture : cachelab::testing::Fixture {
  cachelab::testing::TempDir dir;
  PtqOptions options(const std::string& file = "ptq.safetensors") const {
    PtqOptions o;
    o.calibration = dir.path + "/" + file;
    return o;
  }
  std::string calibrate(PtqOps& ops) {
    BOOST_REQUIRE(ops.calibrator());
    ops.calibrator()->start_calibration();
    with(ops);
    return ops.calibrator()->finish_calibration();
  }
  // The per-step per-linear extra `name` of a trajectory ([T][L]).
  static std::vector<std::vector<double>> extra(const Trajectory& t, const std::string& name) {
    int e = -1;
    for (size_t i = 0; i < t.extras.size(); ++i)
      if (t.extras[i].name == name && t.extras[i].per_linear) e = int(i);
    BOOST_REQUIRE_MESSAGE(e >= 0, name << " not declared");
    std::vector<std::vector<double>> v;
    for (auto& s : t.steps) v.push_back(s.linear_extra[size_t(e)]);
    return v;
  }
  int linear_id(const std::string& name) { return cachelab::testing::linear_id(model, name); }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(quantize_primitives)

BOOST_AUTO_TEST_CASE(known_values_round_half_to_even_on_the_grid) {
  // 2-bit symmetric: grid {-1, 0, 1} * scale with scale = max|x| / 1.
  auto x = at::tensor({-1.0f, -0.5f, 0.0f, 0.5f, 1.0f, 0.7f}).view({1, -1});
  auto q = fake_quantize_rows(x, QuantSpec{2, true, "minmax", 100});
  auto want = at::tensor({-1.0f, -0.0f, 0.0f, 0.0f, 1.0f, 1.0f}).view({1, -1});
  BOOST_CHECK(at::equal(q, want));
  // 8-bit asymmetric on [0, 2.55]: scale 0.01, zero point 0; values on the grid come back.
  auto y = at::tensor({0.0f, 0.01f, 1.27f, 2.55f}).view({1, -1});
  auto rq = row_quant(at::zeros({1}), at::full({1}, 2.55f), 8, false);
  BOOST_CHECK_CLOSE(rq.scale.item<double>(), 0.01, 1e-4);
  BOOST_CHECK_EQUAL(rq.zero_point.item<double>(), 0.0);
  BOOST_CHECK_LT((quant_dequant_rows(y, rq) - y).abs().max().item<double>(), 1e-6);
  // Asymmetric with a negative minimum: zero is exactly representable.
  auto z = at::tensor({-0.3f, 0.0f, 0.9f}).view({1, -1});
  BOOST_CHECK_EQUAL(fake_quantize_rows(z, QuantSpec{4, false, "minmax", 100})[0][1].item<float>(), 0.0f);
  BOOST_CHECK_EQUAL(quant_qmax(4, true), 7);
  BOOST_CHECK_EQUAL(quant_qmin(4, true), -7);
  BOOST_CHECK_EQUAL(quant_qmax(6, false), 63);
}

BOOST_AUTO_TEST_CASE(round_trip_error_is_at_most_half_a_step_for_every_bit_width) {
  auto gen = at::detail::createCPUGenerator(3);
  auto x = at::randn({16, 96}, gen) * at::linspace(0.01, 10, 16).unsqueeze(1);
  for (int bits : {4, 6, 8})
    for (bool sym : {true, false}) {
      auto r = calibrate_rows(x, QuantSpec{bits, sym, "minmax", 100});
      auto q = row_quant(r.first, r.second, bits, sym);
      auto err = (quant_dequant_rows(x, q) - x).abs();
      // Every value lies in its row's range, so it is within scale / 2 of a grid point.
      auto slack = (err - q.scale * 0.5 - q.scale * 1e-5).max().item<double>();
      BOOST_CHECK_MESSAGE(slack <= 0, bits << " bits, symmetric " << sym << ": error exceeds scale/2 by " << slack);
      // And not trivially: the error is of the order of the step.
      BOOST_CHECK_GT((err / q.scale).mean().item<double>(), 0.1);
    }
}

BOOST_AUTO_TEST_CASE(mse_clipping_is_never_worse_than_min_max_on_its_objective) {
  auto gen = at::detail::createCPUGenerator(11);
  auto x = at::randn({32, 1024}, gen).pow(3);  // heavy tails: clipping the few large values pays at 4 bits
  for (int bits : {4, 6, 8})
    for (bool sym : {true, false}) {
      auto mse = [&](const std::string& cal) {
        return (fake_quantize_rows(x, QuantSpec{bits, sym, cal, 100}) - x).pow(2).mean(1);
      };
      auto e_mse = mse("mse"), e_mm = mse("minmax");
      BOOST_CHECK_LE((e_mse - e_mm).max().item<double>(), 1e-12);
      if (bits == 4) BOOST_CHECK_LT(e_mse.sum().item<double>(), 0.9 * e_mm.sum().item<double>());
    }
  // percentile 100 is min-max exactly; a lower percentile clips.
  auto r100 = calibrate_rows(x, QuantSpec{8, false, "percentile", 100});
  auto rmm = calibrate_rows(x, QuantSpec{8, false, "minmax", 100});
  BOOST_CHECK(at::equal(r100.first, rmm.first) && at::equal(r100.second, rmm.second));
  auto r99 = calibrate_rows(x, QuantSpec{8, false, "percentile", 99});
  BOOST_CHECK((r99.second < rmm.second).all().item<bool>());
}

BOOST_AUTO_TEST_CASE(finer_weight_granularity_follows_row_scales) {
  auto gen = at::detail::createCPUGenerator(5);
  // Rows and column groups on very different scales.
  auto w = at::randn({8, 64}, gen) * at::logspace(-3, 0, 8).unsqueeze(1) *
           at::cat({at::ones({32}), at::full({32}, 0.01)}).unsqueeze(0);
  QuantSpec s{4, true, "minmax", 100};
  // The mean relative error of every (row, 32-column group) unit.
  auto unit_err = [&](const std::string& gran) {
    auto e = (fake_quantize_weight(w, s, gran, 32) - w).view({8, 2, 32}).norm(2, {2});
    return (e / w.view({8, 2, 32}).norm(2, {2})).mean().item<double>();
  };
  const double t = unit_err("tensor"), c = unit_err("channel"), g = unit_err("group");
  BOOST_TEST_MESSAGE("4-bit weight error: tensor " << t << ", channel " << c << ", group " << g);
  // Per tensor, the small rows round to zero; per channel, the small half of each row does.
  BOOST_CHECK_LT(c, t);
  BOOST_CHECK_LT(g, 0.5 * c);
  BOOST_CHECK_THROW(fake_quantize_weight(w, s, "group", 48), Error);
  // Per token: a row of small values keeps its own resolution.
  auto a = at::cat({at::randn({1, 64}, gen) * 1e-3, at::randn({1, 64}, gen) * 10}).view({2, 1, 64});
  auto per_token = fake_quantize_per_token(a, QuantSpec{8, false, "minmax", 100});
  BOOST_CHECK_LT(cachelab::testing::rel_l2(per_token[0], a[0]), 0.02);
  auto r = calibrate_rows(a.reshape({1, -1}), QuantSpec{8, false, "minmax", 100});
  auto per_tensor = fake_quantize_range(a, r.first.item<float>(), r.second.item<float>(), 8, false);
  BOOST_CHECK_GT(cachelab::testing::rel_l2(per_tensor[0], a[0]), 0.5);
}

BOOST_AUTO_TEST_CASE(kmeans_medoids_find_one_member_of_each_blob) {
  auto gen = at::detail::createCPUGenerator(2);
  auto centres = at::tensor({0.0, 0.0, 10.0, 0.0, 0.0, 10.0}, at::kDouble).view({3, 2});
  auto X = at::cat({centres[0] + at::randn({20, 2}, gen).to(at::kDouble) * 0.5,
                    centres[1] + at::randn({15, 2}, gen).to(at::kDouble) * 0.5,
                    centres[2] + at::randn({5, 2}, gen).to(at::kDouble) * 0.5});
  auto m = kmeans_medoids(X, 3);
  BOOST_REQUIRE_EQUAL(m.size(), 3u);
  BOOST_CHECK(m[0] < 20 && m[1] >= 20 && m[1] < 35 && m[2] >= 35);
  // Each medoid is the member nearest its blob's mean.
  for (int b = 0; b < 3; ++b) {
    const int64_t lo = b == 0 ? 0 : (b == 1 ? 20 : 35), n = b == 0 ? 20 : (b == 1 ? 15 : 5);
    auto blob = X.narrow(0, lo, n);
    BOOST_CHECK_EQUAL((blob - blob.mean(0, true)).pow(2).sum(1).argmin().item<int64_t>() + lo, m[size_t(b)]);
  }
  BOOST_CHECK_EQUAL(kmeans_medoids(X, 50).size(), 40u);  // k >= n: every row
  BOOST_CHECK(kmeans_medoids(X, 3) == m);                 // deterministic
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(ptq_ops)

BOOST_FIXTURE_TEST_CASE(calibration_records_the_true_ranges_and_groups_partition_them, PtqFixture) {
  PtqOps one(options("g1.safetensors"));
  calibrate(one);
  cachelab::testing::MinMaxOps truth;
  with(truth);
  auto f1 = read_safetensors(dir.path + "/g1.safetensors");
  int checked = 0;
  for (auto& [name, t] : f1.tensors) {
    if (name.find(".act_range") == std::string::npos) continue;
    const int id = linear_id(name.substr(0, name.find(".act_range")));
    BOOST_CHECK_CLOSE(t[0][0].item<double>(), truth.lo[size_t(id)], 1e-4);
    BOOST_CHECK_CLOSE(t[0][1].item<double>(), truth.hi[size_t(id)], 1e-4);
    ++checked;
  }
  BOOST_CHECK_EQUAL(checked, int(model.linears().size()));  // every linear, selected or not
  PtqOptions o = options("g3.safetensors");
  o.timestep_groups = 3;
  PtqOps three(o);
  calibrate(three);
  auto f3 = read_safetensors(dir.path + "/g3.safetensors");
  for (size_t i = 0; i < f3.tensors.size(); ++i) {
    if (f3.tensors[i].first.find(".act_range") == std::string::npos) continue;
    auto& g = f3.tensors[i].second;
    auto& a = f1.tensors[i].second;
    BOOST_REQUIRE_EQUAL(f3.tensors[i].first, f1.tensors[i].first);
    BOOST_REQUIRE_EQUAL(g.size(0), 3);
    BOOST_CHECK_EQUAL(g.select(1, 0).min().item<float>(), a[0][0].item<float>());
    BOOST_CHECK_EQUAL(g.select(1, 1).max().item<float>(), a[0][1].item<float>());
  }
  // The groups really differ (activations drift over the trajectory).
  auto& qkv = f3.tensors[0].second;
  BOOST_CHECK_GT((qkv[0] - qkv[2]).abs().max().item<double>(), 1e-4);
  BOOST_CHECK_EQUAL(f3.metadata.at("steps"), "12");
}

BOOST_FIXTURE_TEST_CASE(tap_calibrates_on_cluster_medoids_inside_the_full_ranges, PtqFixture) {
  PtqOptions o = options("all.safetensors");
  o.timestep_groups = 2;
  PtqOps all(o);
  calibrate(all);
  o.calibration = dir.path + "/tap.safetensors";
  o.calibration_select = "tap";
  o.tap_clusters = 3;
  PtqOps tap(o);
  const std::string summary = calibrate(tap);
  BOOST_TEST_MESSAGE(summary);
  // 12 steps / 2 groups x 4 samples (x2 with guidance) = 48 pairs per group; 3 kept.
  BOOST_CHECK(summary.find("TAP kept 3 of 48, 3 of 48") != std::string::npos);
  auto fa = read_safetensors(dir.path + "/all.safetensors"), ft = read_safetensors(dir.path + "/tap.safetensors");
  int narrower = 0;
  for (size_t i = 0; i < fa.tensors.size(); ++i) {
    if (fa.tensors[i].first.find(".act_range") == std::string::npos) continue;
    auto& a = fa.tensors[i].second;
    auto& t = ft.tensors[i].second;
    BOOST_REQUIRE_EQUAL(ft.tensors[i].first, fa.tensors[i].first);
    BOOST_CHECK((t.select(1, 0) >= a.select(1, 0)).all().item<bool>());  // a subset's min-max lies inside
    BOOST_CHECK((t.select(1, 1) <= a.select(1, 1)).all().item<bool>());
    narrower += !at::equal(t, a);
  }
  BOOST_CHECK_GT(narrower, 0);
  auto t = with(tap);  // and it runs
  BOOST_CHECK(t.failed_step < 0);
}

BOOST_FIXTURE_TEST_CASE(percentile_calibration_samples_every_channel, PtqFixture) {
  // Channels on very different scales: a strided sample that kept hitting one channel would
  // miss the true percentile by far.
  PtqOptions o = options("pct.safetensors");
  o.act_calibrator = "percentile";
  o.percentile = 90;
  o.layers = {"blocks.0.mlp.fc1"};
  PtqOps ops(o);
  c10::InferenceMode guard;
  const int id = linear_id("blocks.0.mlp.fc1");
  const int64_t K = model.linears()[size_t(id)].weight.size(1);
  auto gen = at::detail::createCPUGenerator(4);
  std::vector<at::Tensor> xs;
  ops.start_calibration();
  ops.begin_run(model.linears(), nullptr);
  for (int k = 0; k < 4; ++k) {
    xs.push_back(at::rand({4, 64, K}, gen) * at::arange(1, K + 1, at::kFloat));
    ops.linear(id, xs.back());
  }
  ops.finish_calibration();
  auto f = read_safetensors(dir.path + "/pct.safetensors");
  float hi = 0;
  for (auto& [name, t] : f.tensors)
    if (name == "blocks.0.mlp.fc1.act_range") hi = t[0][1].item<float>();
  auto all = std::get<0>(at::cat(xs).reshape({-1}).sort());
  const float truth = all[int64_t(0.9 * double(all.numel() - 1))].item<float>();
  BOOST_TEST_MESSAGE("90th percentile: calibrated " << hi << ", over every value " << truth);
  BOOST_CHECK_CLOSE(hi, truth, 5.0);
}

BOOST_FIXTURE_TEST_CASE(error_grows_as_bits_shrink_and_is_logged_per_linear, PtqFixture) {
  auto run_bits = [&](int wb, int ab, const std::string& file) {
    PtqOptions o = options(file);
    o.weight_bits = wb;
    o.act_bits = ab;
    PtqOps ops(o);
    if (ops.calibrator()) calibrate(ops);
    auto t = with(ops);
    auto e = extra(t, "quant_err_rel");
    auto b = extra(t, "weight_bits");
    const int fc1 = linear_id("blocks.1.mlp.fc1"), temb = linear_id("t_embedder.mlp.0");
    for (size_t s = 0; s < e.size(); ++s) {
      BOOST_CHECK(std::isfinite(e[s][size_t(fc1)]) && e[s][size_t(fc1)] > 0);
      BOOST_CHECK_EQUAL(b[s][size_t(fc1)], wb);
      BOOST_CHECK(std::isnan(e[s][size_t(temb)]));  // outside `blocks`: full precision
    }
    return cachelab::testing::rel_l2(t.samples, ref_traj.samples);
  };
  const double w8a8 = run_bits(8, 8, "a.safetensors"), w6a6 = run_bits(6, 6, "b.safetensors"),
               w4a8 = run_bits(4, 8, "c.safetensors");
  PtqOptions o = options("none.safetensors");
  o.weight_bits = 4;
  o.act_bits = 16;
  PtqOps w4a16(o);
  BOOST_CHECK(w4a16.calibrator() == nullptr);  // nothing to calibrate: no file is needed
  const double e4a16 = cachelab::testing::rel_l2(with(w4a16).samples, ref_traj.samples);
  BOOST_TEST_MESSAGE("sample error: W8A8 " << w8a8 << ", W6A6 " << w6a6 << ", W4A8 " << w4a8 << ", W4A16 " << e4a16);
  BOOST_CHECK_GT(w8a8, 1e-5);
  BOOST_CHECK_LT(w8a8, w6a6);
  BOOST_CHECK_LT(w8a8, w4a8);
  BOOST_CHECK_LT(e4a16, w4a8 * 1.5);
}

BOOST_FIXTURE_TEST_CASE(temporal_linears_stay_exact_when_asked_or_when_auto_finds_them_sensitive, PtqFixture) {
  auto bits_of = [&](const std::string& temporal, double tol, const std::string& file) {
    PtqOptions o = options(file);
    o.layers = {"all"};
    o.temporal = temporal;
    o.temporal_tolerance = tol;
    PtqOps ops(o);
    std::string summary = calibrate(ops);
    if (temporal == "auto") BOOST_CHECK(summary.find("temporal errors: t_embedder.mlp.0") != std::string::npos);
    auto t = with(ops);
    return extra(t, "weight_bits")[3];
  };
  const int t0 = linear_id("t_embedder.mlp.0"), ada = linear_id("blocks.0.adaLN_modulation.1"),
            fc1 = linear_id("blocks.0.mlp.fc1");
  auto q = bits_of("quantize", 1, "q.safetensors"), ex = bits_of("exact", 1, "e.safetensors");
  BOOST_CHECK_EQUAL(q[size_t(t0)], 8);
  BOOST_CHECK_EQUAL(q[size_t(ada)], 8);
  BOOST_CHECK(std::isnan(ex[size_t(t0)]) && std::isnan(ex[size_t(ada)]));
  BOOST_CHECK_EQUAL(ex[size_t(fc1)], 8);
  auto lax = bits_of("auto", 10.0, "al.safetensors"), strict = bits_of("auto", 1e-9, "as.safetensors");
  BOOST_CHECK_EQUAL(lax[size_t(t0)], 8);
  BOOST_CHECK(std::isnan(strict[size_t(t0)]) && std::isnan(strict[size_t(ada)]));
  BOOST_CHECK_EQUAL(strict[size_t(fc1)], 8);
}

BOOST_FIXTURE_TEST_CASE(stale_or_mismatched_calibration_files_are_refused, PtqFixture) {
  auto expect = [&](PtqOps& ops, const std::string& what) {
    try {
      with(ops);
      BOOST_ERROR("no error; expected one about " << what);
    } catch (const Error& e) {
      BOOST_CHECK_MESSAGE(std::string(e.what()).find(what) != std::string::npos, e.what());
    }
  };
  PtqOps missing(options("absent.safetensors"));
  expect(missing, "cachelab calibrate");
  PtqOps cal(options());
  calibrate(cal);
  PtqOptions o = options();
  o.act_calibrator = "mse";
  PtqOps other(o);
  expect(other, "act_calibrator");
  auto f = read_safetensors(dir.path + "/ptq.safetensors");
  f.metadata["backbone_digest"] = "0123456789abcdef";
  write_safetensors(dir.path + "/ptq.safetensors", f.tensors, f.metadata);
  PtqOps moved(options());
  expect(moved, "digest");
}

BOOST_AUTO_TEST_CASE(sixbit_gives_the_most_stable_blocks_low_bits) {
  const double nan = std::nan("");
  auto low = SixBitPolicy::allocate({0.3, 0.1, nan, 0.2}, 2);
  BOOST_CHECK((low == std::vector<bool>{false, true, false, true}));
  low = SixBitPolicy::allocate({nan, nan, nan, nan}, 1);  // nothing measured: the deepest block
  BOOST_CHECK((low == std::vector<bool>{false, false, false, true}));
  low = SixBitPolicy::allocate({0.3, 0.1, 0.5, 0.2}, 0);
  BOOST_CHECK((low == std::vector<bool>{false, false, false, false}));
}

BOOST_FIXTURE_TEST_CASE(sixbit_meets_its_budget_exactly_and_follows_its_predictor, PtqFixture) {
  PtqOptions po = options("mixed.safetensors");
  po.low_bits = 4;
  PtqOps ops(po);
  calibrate(ops);
  SixBitOptions so;
  so.budget_bits = 6;  // 4 blocks of the tiny DiT: 2 low per step
  SixBitPolicy six(so, BuildContext{});
  auto t = cachelab::testing::run_image(model, sampler, {&six}, run, &ref, nullptr, &ops);
  auto bits = extra(t, "weight_bits");
  int diff_e = -1;
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == "inout_diff") diff_e = int(i);
  BOOST_REQUIRE(diff_e >= 0);
  std::vector<int> block_site(4, -1);
  for (size_t s = 0; s < model.sites().size(); ++s)
    if (model.sites()[s].kind == SiteKind::Block) block_site[size_t(model.sites()[s].block)] = int(s);
  for (size_t s = 0; s < t.steps.size(); ++s) {
    std::vector<double> block_bits(4, 0.0);
    for (size_t l = 0; l < model.linears().size(); ++l) {
      const int b = model.linears()[l].block;
      if (b < 0) continue;
      if (block_bits[size_t(b)] == 0) block_bits[size_t(b)] = bits[s][l];
      BOOST_CHECK_EQUAL(bits[s][l], block_bits[size_t(b)]);  // one precision per block
    }
    const double mean = (block_bits[0] + block_bits[1] + block_bits[2] + block_bits[3]) / 4;
    BOOST_CHECK_EQUAL(mean, 6.0);
    if (s == 0) continue;
    // The low blocks are the two whose input-output difference was smallest one step before.
    std::vector<double> prev;
    for (int b = 0; b < 4; ++b) prev.push_back(t.steps[s - 1].site_extra[size_t(diff_e)][size_t(block_site[size_t(b)])]);
    auto want = SixBitPolicy::allocate(prev, 2);
    for (int b = 0; b < 4; ++b) BOOST_CHECK_EQUAL(block_bits[size_t(b)] == 4, bool(want[size_t(b)]));
  }
  SixBitOptions odd = so;
  odd.budget_bits = 7.5;  // 0.5 of a block
  SixBitPolicy bad(odd, BuildContext{});
  cachelab::testing::check_error([&] { cachelab::testing::run_image(model, sampler, {&bad}, run, &ref, nullptr, &ops); },
                                 {"budget_bits 7.5", "7 or 8"});
}

BOOST_FIXTURE_TEST_CASE(the_quantization_error_correction_is_a_least_squares_fit, PtqFixture) {
  // Two calibration passes over the same calls (ranges, then the fit); the corrected output
  // is then never further from full precision than the uncorrected one on those calls.
  PtqOptions o = options("corr.safetensors");
  o.weight_bits = 4;
  o.correct = true;
  o.layers = {"blocks.1.mlp.fc1", "blocks.2.attn.qkv"};
  PtqOps cal(o);
  c10::InferenceMode guard;
  auto gen = at::detail::createCPUGenerator(9);
  const int fc1 = linear_id("blocks.1.mlp.fc1"), qkv = linear_id("blocks.2.attn.qkv");
  std::vector<std::pair<int, at::Tensor>> calls;
  for (int k = 0; k < 6; ++k)
    for (int id : {fc1, qkv})
      calls.emplace_back(id, at::randn({2, 16, model.linears()[size_t(id)].weight.size(1)}, gen) * (1 + k) + 0.3 * k);
  cal.start_calibration();
  cal.begin_run(model.linears(), nullptr);
  for (auto& [id, x] : calls) cal.linear(id, x);
  BOOST_REQUIRE(cal.another_run(0, at::Tensor()));
  cal.begin_run(model.linears(), nullptr);
  for (auto& [id, x] : calls) cal.linear(id, x);
  BOOST_CHECK(!cal.another_run(0, at::Tensor()));
  BOOST_CHECK(cal.finish_calibration().find("correction of") != std::string::npos);
  PtqOps fixed(o);
  o.correct = false;
  PtqOps plain(o);
  fixed.begin_run(model.linears(), nullptr);
  plain.begin_run(model.linears(), nullptr);
  for (int id : {fc1, qkv}) {
    double e_fixed = 0, e_plain = 0;
    for (auto& [cid, x] : calls) {
      if (cid != id) continue;
      const auto& l = model.linears()[size_t(id)];
      auto ref = dense_linear(x, l.weight, l.bias);
      e_fixed += (fixed.linear(id, x) - ref).pow(2).sum().item<double>();
      e_plain += (plain.linear(id, x) - ref).pow(2).sum().item<double>();
    }
    BOOST_TEST_MESSAGE(model.linears()[size_t(id)].name << ": squared error " << e_plain << " -> " << e_fixed);
    BOOST_CHECK_LE(e_fixed, e_plain * (1 + 1e-6));
    BOOST_CHECK_LT(e_fixed, e_plain);
  }
  // A file without the correction is refused when the variant asks for it.
  PtqOptions need = options("g.safetensors");
  PtqOps ranges_only(need);
  calibrate(ranges_only);
  need.correct = true;
  PtqOps wants(need);
  cachelab::testing::check_error([&] { wants.begin_run(model.linears(), nullptr); }, {"correct"});
}

BOOST_AUTO_TEST_CASE(config_validates_and_round_trips) {
  auto bad = [](const std::string& yaml, const std::string& key) {
    cachelab::testing::check_error(
        [&] { ops_layers().resolve(parse_config_string("type: ptq\n" + yaml, "exp.yaml")); }, {key});
  };
  bad("weight_bits: 5\n", "weight_bits");
  bad("act_bits: 12\n", "act_bits");
  bad("act_granularity: token\nact_calibrator: mse\n", "act_calibrator");
  bad("weight_granularity: row\n", "weight_granularity");
  bad("low_bits: 8\n", "low_bits");
  bad("percentile: 40\n", "percentile");
  cachelab::testing::check_error(
      [] { caches().resolve(parse_config_string("type: sixbit\nbudget_bits: 9\n", "exp.yaml")); }, {"budget_bits"});
  auto six = caches().resolve(
      parse_config_string("type: sixbit\nbudget_bits: 5\ninner: {type: delta_cache, threshold: 0.1}\n", "exp.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(caches().resolve(parse_config_string(to_yaml(six), "again.yaml"))), to_yaml(six));
  auto node = ops_layers().resolve(parse_config_string(
      "type: ptq\nweight_bits: 4\nweight_granularity: group\ngroup_size: 16\nact_calibrator: mse\ntimestep_groups: 5\n",
      "exp.yaml"));
  auto again = ops_layers().resolve(parse_config_string(to_yaml(node), "again.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(again), to_yaml(node));
  BOOST_CHECK_EQUAL(node.find("group_size")->scalar, "16");
  BOOST_CHECK_EQUAL(node.find("temporal")->scalar, "quantize");
}

BOOST_AUTO_TEST_SUITE_END()
