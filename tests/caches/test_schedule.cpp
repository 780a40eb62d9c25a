// The `schedule` policy follows its schedule exactly: reuse where it says 0, the same
// samples as FORA when the schedule is FORA's, the reference bit for bit when all 1, and
// a schedule for another step count or another model is refused.
#include <boost/test/unit_test.hpp>

#include "caches/fora.h"
#include "caches/schedule.h"
#include "fixture.h"
#include "framework/schedule.h"

using namespace cachelab;

BOOST_FIXTURE_TEST_SUITE(schedule_policy, Fixture)

BOOST_AUTO_TEST_CASE(follows_an_inline_schedule_and_equals_fora_on_foras_schedule) {
  CacheScheduleOptions o;
  for (int i = 0; i < 12; ++i) o.compute.push_back(i % 3 == 0);
  CacheSchedulePolicy s(o);
  auto t = with(s);
  ForaOptions fo;
  fo.interval = 3;
  ForaPolicy fora(fo);
  auto f = with(fora);
  const int attn = site("blocks.2.attn"), block = site("blocks.2");
  for (size_t i = 0; i < 12; ++i) {
    BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(i % 3 == 0 ? Decision::Compute : Decision::Reuse));
    BOOST_CHECK_EQUAL(t.steps[i].decision[block], uint8_t(Decision::Compute));
  }
  BOOST_CHECK(at::equal(t.samples, f.samples));
  BOOST_CHECK_EQUAL(t.flops, f.flops);
}

BOOST_AUTO_TEST_CASE(an_irregular_schedule_reuses_exactly_where_it_says) {
  CacheScheduleOptions o;
  o.compute = {1, 0, 0, 0, 1, 1, 0, 1, 0, 0, 1, 1};
  o.layers = {"block"};
  CacheSchedulePolicy s(o);
  auto t = with(s);
  const int block = site("blocks.0"), attn = site("blocks.0.attn");
  for (size_t i = 0; i < 12; ++i) {
    BOOST_CHECK_EQUAL(t.steps[i].decision[block], uint8_t(o.compute[i] ? Decision::Compute : Decision::Reuse));
    // Inside a reused block nothing runs.
    if (!o.compute[i]) BOOST_CHECK_EQUAL(t.steps[i].decision[attn], uint8_t(Decision::Skipped));
  }
  BOOST_CHECK_GT(t.steps.back().err_ref_rel_l1, 0.0);
}

BOOST_AUTO_TEST_CASE(token_rates_recompute_that_fraction_of_tokens) {
  cachelab::testing::TempDir dir;
  int driven = 0;
  for (auto& st : model.sites()) driven += st.kind == SiteKind::Attn || st.kind == SiteKind::Mlp;
  Schedule sch;
  sch.method = "diffsparse";
  sch.steps = 12;
  sch.compute.assign(12, 1);
  // Rate 1 at even steps, 0.5 at odd ones (0 for the mlp sites at step 5: reuse).
  for (int t = 0; t < 12; ++t) {
    std::vector<double> row(size_t(driven), t % 2 == 0 ? 1.0 : 0.5);
    if (t == 5)
      for (size_t j = 1; j < row.size(); j += 2) row[j] = 0;
    sch.rates.push_back(row);
  }
  save_schedule(sch, dir.path + "/r.yaml");
  BOOST_REQUIRE_EQUAL(load_schedule(dir.path + "/r.yaml").rates.size(), 12u);
  CacheScheduleOptions o;
  o.file = dir.path + "/r.yaml";
  CacheSchedulePolicy s(o);
  auto t = with(s);
  int e = -1;
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == "computed_token_fraction") e = int(i);
  BOOST_REQUIRE(e >= 0);
  const int attn = site("blocks.1.attn"), mlp = site("blocks.1.mlp");
  const double N = 16;  // the tiny DiT's tokens (8x8 pixels, patch 2)
  for (size_t i = 1; i < 12; ++i) {
    const double fa = t.steps[i].site_extra[size_t(e)][size_t(attn)];
    BOOST_CHECK_CLOSE(fa, i % 2 == 0 ? 1.0 : std::ceil(0.5 * N) / N, 1e-9);
    if (i == 5) BOOST_CHECK_EQUAL(t.steps[i].decision[mlp], uint8_t(Decision::Reuse));
  }
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK(!at::equal(t.samples, ref_traj.samples));
  // All rates 1: the reference bit for bit.
  for (auto& row : sch.rates) std::fill(row.begin(), row.end(), 1.0);
  save_schedule(sch, dir.path + "/ones.yaml");
  o.file = dir.path + "/ones.yaml";
  CacheSchedulePolicy ones(o);
  BOOST_CHECK(at::equal(with(ones).samples, ref_traj.samples));
}

BOOST_AUTO_TEST_CASE(all_ones_reproduce_the_reference_bit_for_bit) {
  CacheScheduleOptions o;
  o.compute.assign(12, 1);
  CacheSchedulePolicy s(o);
  auto t = with(s);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
}

BOOST_AUTO_TEST_CASE(a_schedule_for_other_steps_or_weights_is_refused) {
  cachelab::testing::TempDir d;
  CacheScheduleOptions o;
  o.compute.assign(10, 1);
  CacheSchedulePolicy s(o);
  cachelab::testing::check_error([&] { with(s); }, {"10 steps", "this run has 12"});
  Schedule file;
  file.steps = 12;
  file.compute.assign(12, 1);
  file.backbone_digest = "0000000000000000";
  save_schedule(file, d.path + "/s.yaml");
  CacheScheduleOptions fo;
  fo.file = d.path + "/s.yaml";
  CacheSchedulePolicy from_file(fo);
  RunContext ctx;
  ctx.sites = &model.sites();
  ctx.steps = 12;
  ctx.backbone_digest = "1111111111111111";
  cachelab::testing::check_error([&] { from_file.begin_run(ctx); }, {"digest 0000000000000000", "cachelab profile"});
  ctx.backbone_digest = "0000000000000000";
  from_file.begin_run(ctx);
}

BOOST_AUTO_TEST_SUITE_END()
