// Run summaries: the wall-clock speedup is the median of interleaved ratios with its
// quartiles, and is flagged suspect only when it exceeds the FLOPs speedup.
#include <boost/test/unit_test.hpp>

#include "framework/error.h"
#include "framework/summary.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(summary)

BOOST_AUTO_TEST_CASE(timing_summary_is_the_median_ratio_and_flags_only_a_speedup_above_the_flops_one) {
  std::map<std::string, double> s = {{"speedup_flops", 2.0}};
  add_timing_summary(s, {2.0, 2.2, 1.8, 2.0}, {1.0, 1.0, 1.0, 2.0});
  BOOST_CHECK_CLOSE(s["speedup_wall"], 1.9, 1e-9);  // ratios sorted 1, 1.8, 2, 2.2: median 1.9
  BOOST_CHECK_CLOSE(s["speedup_wall_min"], 1.0, 1e-9);
  BOOST_CHECK_CLOSE(s["speedup_wall_max"], 2.2, 1e-9);
  BOOST_CHECK_EQUAL(s["timing_reps"], 4.0);
  BOOST_CHECK_EQUAL(s["speedup_wall_suspect"], 0.0);  // a wall speedup at the FLOPs one is not suspect
  std::map<std::string, double> fast = {{"speedup_flops", 2.0}};
  add_timing_summary(fast, {3.0, 3.0, 3.0}, {1.0, 1.0, 1.0});
  BOOST_CHECK_EQUAL(fast["speedup_wall_suspect"], 1.0);  // 3x wall for 2x FLOPs
  std::map<std::string, double> none;
  BOOST_CHECK_THROW(add_timing_summary(none, {1.0}, {1.0}), Error);
}

BOOST_AUTO_TEST_CASE(reuse_fraction_ignores_skipped_sites) {
  StepRecord a, b;
  a.decision = {0, 1, 3, 3};  // compute, reuse, skipped, skipped
  b.decision = {2, 0, 4, 5};  // predict, compute, partial, blend
  BOOST_CHECK_CLOSE(reuse_fraction({a, b}), 2.0 / 6.0, 1e-12);
  BOOST_CHECK_EQUAL(reuse_fraction({}), 0.0);
}

BOOST_AUTO_TEST_SUITE_END()
