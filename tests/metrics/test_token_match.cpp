// token_match on token ids worked out by hand.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>

#include "metrics/token_match.h"
#include "tests/test_util.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(token_match)

BOOST_AUTO_TEST_CASE(fractions_of_tokens_and_sequences_by_hand) {
  MetricInputs in;
  in.reference = at::tensor({1, 2, 3, 4, 5, 6, 7, 8}, at::kLong).reshape({2, 4});
  in.samples = at::tensor({1, 2, 3, 4, 5, 0, 7, 0}, at::kLong).reshape({2, 4});  // 6 of 8 tokens, 1 of 2 rows
  TokenMatchMetric m{NoOptions{}};
  auto r = m.compute(in);
  BOOST_REQUIRE_EQUAL(r.size(), size_t(2));
  BOOST_CHECK_EQUAL(r[0].first, "token_match");
  BOOST_CHECK_CLOSE(r[0].second, 0.75, 1e-12);
  BOOST_CHECK_CLOSE(r[1].second, 0.5, 1e-12);
  in.samples = in.reference.clone();
  BOOST_CHECK_EQUAL(m.compute(in)[0].second, 1.0);
  in.samples = in.reference.to(at::kFloat);
  cachelab::testing::check_error([&] { m.compute(in); }, {"not integers"});
}

BOOST_AUTO_TEST_SUITE_END()
