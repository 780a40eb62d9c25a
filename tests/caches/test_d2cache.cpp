// d2Cache (caches/d2cache.h) on the mdlm pipeline: its parts against direct computations of
// the reference's definitions (certainty density, attention rollout, nucleus, inflation), the
// rows it chooses step by step, exactness when it chooses everything, and savings by default.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/d2cache.h"
#include "caches/none.h"
#include "framework/config.h"
#include "framework/error.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "models/mdlm_pipeline.h"
#include "models/tiny_mdlm.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::extra_id;
using cachelab::testing::MdlmFixture;
using cachelab::testing::run_seq;

namespace {

// The density by its definition, one position at a time: sum_j m(j) g(i - j) over the
// canvas j in [-G, 2G) (left of the sequence decoded, right of it as the last position),
// over the kernel's sum on offsets [-3G, 3G).
double direct_density(const std::vector<int>& m, int64_t i, double sigma) {
  const int64_t G = int64_t(m.size());
  auto g = [&](double t) { return std::exp(-t * t / (2 * sigma * sigma)); };
  double num = 0, den = 0;
  for (int64_t j = -G; j < 2 * G; ++j) {
    const int mj = j < 0 ? 1 : (j >= G ? m[size_t(G - 1)] : m[size_t(j)]);
    num += mj * g(double(i - j));
  }
  for (int64_t d = -3 * G; d < 3 * G; ++d) den += g(double(d));
  return num / den;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(d2cache)

BOOST_AUTO_TEST_CASE(certainty_density_is_the_direct_gaussian_sum_with_the_reference_boundary_rule) {
  // Two masks: one whose last position is masked (right side counts as masked), one whose
  // last is decoded (right side counts as decoded).
  const std::vector<std::vector<int>> masks = {{1, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0}, {1, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1}};
  auto m = at::zeros({2, 12}, at::kBool);
  for (int b = 0; b < 2; ++b)
    for (int i = 0; i < 12; ++i) m[b][i] = bool(masks[size_t(b)][size_t(i)]);
  // The reference's certainty_density (src/utils/common.py, float32 FFT) on these masks.
  const double want[2][2][12] = {
      {{0.802830696, 0.664930761, 0.523465753, 0.409028590, 0.329713106, 0.279279113, 0.253462851, 0.243519485,
        0.226978704, 0.184872583, 0.123210087, 0.065195985},
       {0.720721006, 0.576297939, 0.423711717, 0.279354870, 0.159985125, 0.078978963, 0.041215666, 0.047763843,
        0.105538122, 0.224676967, 0.400332212, 0.599743664}},
      {{0.520051360, 0.501054883, 0.479188889, 0.454912573, 0.428711444, 0.401081502, 0.372514784, 0.343485981,
        0.314440489, 0.285784811, 0.257879019, 0.231032029},
       {0.591083467, 0.590281188, 0.588818252, 0.587036908, 0.585224986, 0.583597779, 0.582285643, 0.581325948,
        0.580662191, 0.580146611, 0.579551637, 0.578583658}}};
  const double sigmas[2] = {2.0, 10.0};
  for (int s = 0; s < 2; ++s) {
    auto d = D2Cache::certainty_density(m, sigmas[s]);
    BOOST_REQUIRE(d.sizes() == at::IntArrayRef({2, 12}));
    double err_direct = 0, err_ref = 0;
    for (int b = 0; b < 2; ++b)
      for (int i = 0; i < 12; ++i) {
        const double got = d[b][i].item<double>();
        err_direct = std::max(err_direct, std::abs(got - direct_density(masks[size_t(b)], i, sigmas[s])));
        err_ref = std::max(err_ref, std::abs(got - want[s][b][i]));
      }
    BOOST_TEST_MESSAGE("sigma " << sigmas[s] << ": max |density - direct| " << err_direct
                                << ", max |density - reference (float32 FFT)| " << err_ref);
    BOOST_CHECK_LT(err_direct, 1e-6);
    BOOST_CHECK_LT(err_ref, 2e-6);
  }
  // A random mask of 40 against the direct sum.
  auto r = at::rand({1, 40}, at::TensorOptions().dtype(at::kDouble)).lt(0.4);
  std::vector<int> rv(40);
  for (int i = 0; i < 40; ++i) rv[size_t(i)] = r[0][i].item<bool>();
  auto d = D2Cache::certainty_density(r, 3.0);
  double err = 0;
  for (int i = 0; i < 40; ++i) err = std::max(err, std::abs(d[0][i].item<double>() - direct_density(rv, i, 3.0)));
  BOOST_TEST_MESSAGE("random mask of 40, sigma 3: max |density - direct| " << err);
  BOOST_CHECK_LT(err, 1e-6);
}

BOOST_AUTO_TEST_CASE(rollout_importance_is_the_column_sum_of_the_full_matrix_rollout) {
  // 3 layers, B = 2, L = 7; layer 0 computes every row, layers 1 and 2 a subset (per sample).
  const int64_t B = 2, L = 7;
  at::manual_seed(3);
  std::vector<at::Tensor> rows = {at::arange(L).unsqueeze(0).expand({B, L}).contiguous(),
                                  at::tensor({1, 3, 4, 2, 5, 6}, at::kLong).view({B, 3}),
                                  at::tensor({0, 6, 0, 1}, at::kLong).view({B, 2})};
  std::vector<at::Tensor> maps;
  for (auto& r : rows) maps.push_back(at::softmax(at::randn({B, r.size(1), L}, at::kDouble), -1));
  auto got = D2Cache::rollout_importance(rows, maps, L);
  // The reference's way: rollout = M_l @ rollout from the identity, M_l = normalise(A_l + I)
  // with A_l the identity except at the computed rows; importance = column sums.
  double err = 0;
  for (int64_t b = 0; b < B; ++b) {
    auto roll = at::eye(L, at::kDouble);
    for (size_t l = 0; l < rows.size(); ++l) {
      auto A = at::eye(L, at::kDouble);
      for (int64_t j = 0; j < rows[l].size(1); ++j) A[rows[l][b][j].item<int64_t>()] = maps[l][b][j];
      auto M = A + at::eye(L, at::kDouble);
      M = M / M.sum(1, true);
      roll = at::matmul(M, roll);
    }
    err = std::max(err, (roll.sum(0) - got[b]).abs().max().item<double>());
  }
  BOOST_TEST_MESSAGE("rollout importance vs full-matrix rollout: max abs error " << err);
  BOOST_CHECK_LT(err, 1e-12);
  BOOST_CHECK_LT((got.sum(1) - double(L)).abs().max().item<double>(), 1e-12);  // rows of the rollout sum to 1
}

BOOST_AUTO_TEST_CASE(nucleus_and_inflation_follow_the_reference_rules) {
  auto s = at::tensor({0.5, 0.3, 0.2}, at::kDouble).view({1, 3});
  auto all3 = at::ones({1, 3}, at::kBool);
  auto pick = [](const at::Tensor& t) {
    std::string o;
    for (int64_t i = 0; i < t.size(1); ++i) o += t[0][i].item<bool>() ? '1' : '0';
    return o;
  };
  BOOST_CHECK_EQUAL(pick(D2Cache::nucleus(s, 0.6, all3)), "100");   // 0.5 <= 0.6 < 0.8
  BOOST_CHECK_EQUAL(pick(D2Cache::nucleus(s, 0.85, all3)), "110");  // 0.8 <= 0.85 < 1
  BOOST_CHECK_EQUAL(pick(D2Cache::nucleus(s, 0.1, all3)), "100");   // at least one
  auto bits = [](const std::string& b) {
    auto t = at::zeros({1, int64_t(b.size())}, at::kBool);
    for (size_t i = 0; i < b.size(); ++i) t[0][int64_t(i)] = b[i] == '1';
    return t;
  };
  auto not0 = bits("011");
  BOOST_CHECK_EQUAL(pick(D2Cache::nucleus(s, 0.6, not0)), "010");   // renormalised: 0.6, 0.4
  auto sel = bits("10010000101");
  BOOST_CHECK_EQUAL(pick(D2Cache::inflate(sel, 3)), "11110000111");  // gaps 3 and 2 filled, 5 not
  BOOST_CHECK_EQUAL(pick(D2Cache::inflate(sel, 2)), "10010000111");
  BOOST_CHECK_EQUAL(pick(D2Cache::inflate(sel, 0)), "10010000101");
}

BOOST_FIXTURE_TEST_CASE(chosen_rows_hold_the_decoded_tokens_the_candidates_and_the_nucleus, MdlmFixture) {
  D2CacheOptions o;
  o.current_k = 5;
  o.inflate_w = 2;
  D2Cache cache(o);
  cache.record_choices(true);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  const auto& ch = cache.choices();
  BOOST_REQUIRE_EQUAL(ch.size(), 11u);  // every step after the first
  const int64_t mask = model.mask_id();
  BOOST_CHECK_EQUAL(t.samples.eq(mask).sum().item<int64_t>(), 0);
  for (size_t i = 0; i < ch.size(); ++i) {
    const auto& c = ch[i];
    const int step = int(i) + 1, block = step / 4;
    // 2 tokens per step per sample, decoded by the previous step, all computed.
    BOOST_CHECK(at::equal(c.decoded.sum(1), at::full({3}, 2, at::kLong)));
    BOOST_CHECK(!(c.decoded & ~c.rows).any().item<bool>());
    // Candidates: masked positions (24 - 2 step of them remain), at most current_k, inside the
    // generation and not before the block; the block's masked positions rank first.
    const int64_t remaining = 24 - 2 * step;
    BOOST_CHECK(at::equal(c.candidates.sum(1), at::full({3}, std::min<int64_t>(5, remaining), at::kLong)));
    BOOST_CHECK(!c.candidates.narrow(1, 0, 8 + 8 * block).any().item<bool>());
    BOOST_CHECK(!(c.candidates & c.decoded).any().item<bool>());
    const int64_t in_block_masked = 8 - 2 * (step % 4);
    BOOST_CHECK(at::equal(c.candidates.narrow(1, 8 + 8 * block, 8).sum(1),
                          at::full({3}, std::min<int64_t>(5, in_block_masked), at::kLong)));
    // The nucleus of the rollout importance among the rest, and nothing else but inflation and top-up.
    auto base = c.candidates | c.decoded;
    BOOST_CHECK(at::equal(c.nucleus, D2Cache::nucleus(c.importance, o.rollout_p, ~base) & ~base));
    BOOST_CHECK(c.nucleus.sum(1).ge(1).all().item<bool>());
    BOOST_CHECK(!(c.nucleus & ~c.rows).any().item<bool>());
    auto inflated = D2Cache::inflate(base | c.nucleus, o.inflate_w);
    BOOST_CHECK(!(inflated & ~c.rows).any().item<bool>());
    auto counts = c.rows.sum(1);
    BOOST_CHECK(counts.eq(counts.max()).all().item<bool>());  // topped up to one count
    BOOST_CHECK(at::equal(counts.max(), inflated.sum(1).max()));
    BOOST_CHECK_LT((c.importance.sum(1) - 32.0).abs().max().item<double>(), 1e-9);
  }
}

BOOST_FIXTURE_TEST_CASE(choosing_every_position_reproduces_the_uncached_run, MdlmFixture) {
  D2CacheOptions o;
  o.rollout_p = 1;
  o.current_k = 24;
  D2Cache cache(o);
  cache.record_choices(true);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  for (const auto& c : cache.choices()) BOOST_CHECK(c.rows.all().item<bool>());
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  double worst = 0;
  for (auto& s : t.steps) worst = std::max(worst, s.err_ref_rel_l1);
  BOOST_TEST_MESSAGE("d2cache choosing everything: max per-step rel L1 vs uncached " << worst);
  BOOST_CHECK_EQUAL(worst, 0.0);
}

BOOST_FIXTURE_TEST_CASE(default_settings_compute_fewer_flops_and_log_the_hit_rate_of_the_rows, MdlmFixture) {
  D2Cache cache{D2CacheOptions{}};  // rollout_p 0.1, current_k 32, sigma 10, inflate_w 4
  cache.record_choices(true);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  const auto& ch = cache.choices();
  BOOST_REQUIRE_EQUAL(ch.size(), 11u);
  const int64_t mask = model.mask_id();
  BOOST_CHECK_EQUAL(t.samples.eq(mask).sum().item<int64_t>(), 0);
  // FLOPs of what ran: all 32 rows at the first step, R_i rows after; keys always all 32;
  // logits for the block's 8 positions.
  const double D = 32, M = 128, V = 32, L = 32, depth = 2;
  double want = 0;
  std::vector<double> R(12, L);
  for (size_t i = 0; i < ch.size(); ++i) R[i + 1] = double(ch[i].rows.sum(1)[0].item<int64_t>());
  for (int i = 0; i < 12; ++i)
    want += depth * (2 * R[size_t(i)] * D * 3 * D + 4 * R[size_t(i)] * L * D + 2 * R[size_t(i)] * D * D +
                     4 * R[size_t(i)] * D * M) + 2 * 8 * D * V;
  BOOST_CHECK_CLOSE(t.flops, 3 * want, 1e-9);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  const double agree = t.samples.eq(ref.samples).narrow(1, 8, 24).to(at::kDouble).mean().item<double>();
  BOOST_TEST_MESSAGE("d2cache defaults: FLOPs / uncached " << t.flops / ref_traj.flops << ", token agreement "
                                                           << agree);
  // Hit rate: every key is stored after the first step, so the store supplies (L - R) / L.
  const int hit = extra_id(t, "kv_hit_rate");
  BOOST_REQUIRE_GE(hit, 0);
  double err = 0;
  for (int layer = 0; layer < 2; ++layer) {
    const int attn = find_site(model.sites(), "layers." + std::to_string(layer) + ".attn");
    for (int i = 0; i < 12; ++i)
      err = std::max(err, std::abs(t.steps[size_t(i)].site_extra[size_t(hit)][size_t(attn)] - (L - R[size_t(i)]) / L));
  }
  BOOST_TEST_MESSAGE("kv_hit_rate vs (L - R) / L: max abs error " << err);
  BOOST_CHECK_LT(err, 1e-12);
  // A tighter setting (current_k 4, no inflation) saves more.
  D2CacheOptions o;
  o.current_k = 4;
  o.inflate_w = 0;
  D2Cache tight(o);
  auto t2 = run_seq(model, pipe, &tight, run, &ref, nullptr);
  const double agree2 = t2.samples.eq(ref.samples).narrow(1, 8, 24).to(at::kDouble).mean().item<double>();
  BOOST_TEST_MESSAGE("d2cache current_k 4, inflate_w 0: FLOPs / uncached " << t2.flops / ref_traj.flops
                                                                           << ", token agreement " << agree2);
  BOOST_CHECK_EQUAL(t2.samples.eq(mask).sum().item<int64_t>(), 0);
  BOOST_CHECK_LT(t2.flops, t.flops);
}

BOOST_AUTO_TEST_CASE(bad_options_are_refused_by_name) {
  auto bad = [](const std::string& yaml, const std::string& key) {
    cachelab::testing::check_error([&] { ops_layers().resolve(parse_config_string(yaml, "exp.yaml")); }, {key});
  };
  bad("type: d2cache\nrollout_p: 1.5\n", "rollout_p");
  bad("type: d2cache\ncurrent_k: 0\n", "current_k");
  bad("type: d2cache\nsigma: 0\n", "sigma");
  bad("type: d2cache\ninflate_w: -1\n", "inflate_w");
  auto node = ops_layers().resolve(parse_config_string("type: d2cache\n", "exp.yaml"));
  BOOST_CHECK_EQUAL(node.find("current_k")->scalar, "32");
}

BOOST_AUTO_TEST_SUITE_END()
