// The masked-LM decoding rules on logits whose confidences are known: a two-token vocabulary
// with logits [a, 0] gives the first token probability sigmoid(a).
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "framework/config.h"
#include "framework/registries.h"
#include "models/lm_decoders.h"
#include "models/mdlm_pipeline.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

// One sample, positions with the given confidences (all masked unless `masked` says otherwise).
UnmaskStep step_with(const std::vector<double>& conf, int quota, std::vector<bool> masked = {}) {
  const int64_t N = int64_t(conf.size());
  auto logits = at::zeros({1, N, 2}, at::kFloat);
  auto m = at::ones({1, N}, at::kBool);
  for (int64_t i = 0; i < N; ++i) {
    logits[0][i][0] = float(std::log(conf[size_t(i)] / (1 - conf[size_t(i)])));
    if (!masked.empty() && !masked[size_t(i)]) m[0][i] = false;
  }
  UnmaskStep s;
  s.logits = logits;
  s.masked = m;
  s.noise = at::tensor({0.3f, -1.0f, 2.0f, 0.1f, -0.5f}, at::kFloat).narrow(0, 0, N).unsqueeze(0);
  s.quota = quota;
  return s;
}

std::vector<int> picked(const UnmaskChoice& c) {
  std::vector<int> out;
  for (int64_t i = 0; i < c.unmask.size(1); ++i)
    if (c.unmask[0][i].item<bool>()) out.push_back(int(i));
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(lm_decoders)

BOOST_AUTO_TEST_CASE(low_confidence_commits_the_quota_most_confident_first) {
  LowConfidenceDecoder d{LowConfidenceOptions{}};
  auto c = d.choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 2));
  BOOST_CHECK((picked(c) == std::vector<int>{1, 3}));
  BOOST_CHECK(c.tokens.eq(0).all().item<bool>());  // the argmax token everywhere
  // Decoded positions are never chosen again; the quota falls to the next most confident.
  auto c2 = d.choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 2, {true, false, true, true, true}));
  BOOST_CHECK((picked(c2) == std::vector<int>{3, 4}));
}

BOOST_AUTO_TEST_CASE(random_remasking_follows_the_noise_not_the_confidence) {
  RandomDecoder d{LowConfidenceOptions{}};
  auto c = d.choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 2));
  BOOST_CHECK((picked(c) == std::vector<int>{0, 2}));  // noise 0.3 and 2.0 are the largest
}

BOOST_AUTO_TEST_CASE(threshold_commits_every_confident_token_and_at_least_one) {
  ThresholdDecodingOptions o;
  o.threshold = 0.9;
  ThresholdDecoder d(o);
  BOOST_CHECK((picked(d.choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) == std::vector<int>{1, 3}));
  o.threshold = 0.99;
  BOOST_CHECK((picked(ThresholdDecoder(o).choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) == std::vector<int>{1}));
  // The quota of the fixed schedule does not limit it.
  o.threshold = 0.55;
  BOOST_CHECK((picked(ThresholdDecoder(o).choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) ==
               std::vector<int>{0, 1, 3, 4}));
}

BOOST_AUTO_TEST_CASE(factor_takes_the_largest_n_with_n_plus_one_times_error_below_the_factor) {
  FactorDecodingOptions o;
  o.factor = 1.0;
  // Sorted 0.95, 0.92, 0.7, 0.6, 0.5: (n+1)(1-c_n) = 0.1, 0.24, 1.2, 2.0, 3.0 -> n = 2.
  BOOST_CHECK((picked(FactorDecoder(o).choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) == std::vector<int>{1, 3}));
  o.factor = 1.5;  // n = 3
  BOOST_CHECK((picked(FactorDecoder(o).choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) == std::vector<int>{1, 3, 4}));
  o.factor = 0.05;  // none qualifies: still one
  BOOST_CHECK((picked(FactorDecoder(o).choose(step_with({0.6, 0.95, 0.5, 0.92, 0.7}, 1))) == std::vector<int>{1}));
}

BOOST_AUTO_TEST_CASE(credit_fuses_each_top_tokens_decayed_credit_and_starts_over_per_block) {
  CreditDecodingOptions o;  // threshold 0.9, alpha 0.7, gamma 0.2, decay 0.8
  auto fused = [&](double logit, double credit) { return logit + 0.7 * std::log1p(credit); };
  const double a = std::log(0.87 / 0.13);  // position 1's logit of token 0; position 2's top is token 1 (p 0.7)
  CreditDecoder d(o);
  auto s = step_with({0.95, 0.87, 0.3}, 1);
  s.inner = 0;
  auto f0 = d.fuse(s);
  BOOST_CHECK_CLOSE(f0[0][1][0].item<double>(), fused(a, std::pow(0.87, 0.2)), 1e-4);
  BOOST_CHECK_SMALL(f0[0][1][1].item<double>(), 1e-7);  // the other token earned nothing
  BOOST_CHECK_CLOSE(f0[0][2][1].item<double>(), fused(0.0, std::pow(0.7, 0.2)), 1e-4);
  s.inner = 1;  // the block's next step: the credit decays, then gains again
  auto f1 = d.fuse(s);
  BOOST_CHECK_CLOSE(f1[0][1][0].item<double>(), fused(a, 0.8 * std::pow(0.87, 0.2) + std::pow(0.87, 0.2)), 1e-4);
  s.inner = 0;  // a new block starts over
  BOOST_CHECK(at::allclose(d.fuse(s), f0));
  // The credit lifts 0.87 over the threshold (0.915) where the plain rule takes the top one only.
  CreditDecoder fresh(o);
  BOOST_CHECK((picked(fresh.choose(step_with({0.95, 0.87, 0.3}, 1))) == std::vector<int>{0, 1}));
  BOOST_CHECK((picked(ThresholdDecoder(ThresholdDecodingOptions{}).choose(step_with({0.95, 0.87, 0.3}, 1))) ==
               std::vector<int>{0}));
  // alpha 0 is the threshold rule.
  o.alpha = 0;
  BOOST_CHECK((picked(CreditDecoder(o).choose(step_with({0.95, 0.87, 0.3}, 1))) == std::vector<int>{0}));
}

BOOST_AUTO_TEST_CASE(the_pipeline_option_round_trips_and_bad_names_are_caught) {
  register_all();
  auto read = [](const std::string& yaml) {
    return read_options<MdlmPipelineOptions>(parse_config_string(yaml, "p.yaml"), "pipeline `mdlm`");
  };
  auto o = read("decoder: {type: threshold, threshold: 0.8}\n");
  ConfigNode out = ConfigNode::make_map();
  OptionWriter w(out);
  o.fields(w);
  auto back = read(to_yaml(out));
  ConfigNode again = ConfigNode::make_map();
  OptionWriter w2(again);
  back.fields(w2);
  BOOST_CHECK_EQUAL(to_yaml(again), to_yaml(out));
  BOOST_CHECK_NE(to_yaml(out).find("threshold: 0.8"), std::string::npos);
  cachelab::testing::check_error([&] { read("decoder: {type: treshold}\n"); }, {"treshold", "threshold"});
  cachelab::testing::check_error([&] { read("decoder: {type: threshold, threshold: 1.5}\n"); }, {"threshold", "(0, 1]"});
}

BOOST_AUTO_TEST_SUITE_END()
