// Samplers: schedule values, timestep spacing, and exact recovery with an oracle model.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "models/samplers.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(samplers)

BOOST_AUTO_TEST_CASE(linear_schedule_matches_closed_form) {
  auto s = NoiseSchedule::linear(1000, 1e-4, 0.02);
  BOOST_CHECK_CLOSE(s.betas.front(), 1e-4, 1e-9);
  BOOST_CHECK_CLOSE(s.betas.back(), 0.02, 1e-9);
  double prod = 1;
  for (int t = 0; t <= 10; ++t) prod *= 1 - (1e-4 + (0.02 - 1e-4) * t / 999.0);
  BOOST_CHECK_CLOSE(s.alpha_bar[10], prod, 1e-9);
  // alpha_bar at T-1 for this schedule is about 4.04e-5 (the DiT/ADM value).
  BOOST_CHECK_CLOSE(s.alpha_bar[999], 4.0358e-5, 0.1);
}

BOOST_AUTO_TEST_CASE(spacing_is_even_and_descending) {
  auto ts = spaced_timesteps(1000, 50);
  BOOST_REQUIRE_EQUAL(ts.size(), 50u);
  BOOST_CHECK_EQUAL(ts.front(), 980);
  BOOST_CHECK_EQUAL(ts.back(), 0);
  for (size_t i = 1; i < ts.size(); ++i) BOOST_CHECK_EQUAL(ts[i - 1] - ts[i], 20);
}

// With the exact epsilon of a single known clean sample, deterministic DDIM lands on it.
BOOST_AUTO_TEST_CASE(ddim_with_oracle_epsilon_recovers_the_clean_sample) {
  DdimOptions o;
  o.steps = 10;
  o.clip_x0 = false;
  DdimSampler s(o);
  auto x0 = at::rand({2, 1, 4, 4}, at::kDouble) * 2 - 1;
  auto noise = at::randn({2, 1, 4, 4}, at::kDouble);
  const double abar0 = s.schedule().alpha_bar[s.timesteps()[0]];
  auto x = std::sqrt(abar0) * x0 + std::sqrt(1 - abar0) * noise;
  for (int i = 0; i < s.num_steps(); ++i) {
    const double abar = s.schedule().alpha_bar[s.timesteps()[i]];
    auto eps = (x - std::sqrt(abar) * x0) / std::sqrt(1 - abar);
    x = s.step(i, x, eps, at::Tensor());
  }
  BOOST_CHECK_LT((x - x0).abs().max().item<double>(), 1e-9);
}

BOOST_AUTO_TEST_CASE(ddim_with_oracle_v_prediction_recovers_the_clean_sample) {
  DdimOptions o;
  o.steps = 10;
  o.clip_x0 = false;
  o.prediction = "v";
  DdimSampler s(o);
  auto x0 = at::rand({2, 1, 4, 4}, at::kDouble) * 2 - 1;
  auto noise = at::randn({2, 1, 4, 4}, at::kDouble);
  const double abar0 = s.schedule().alpha_bar[s.timesteps()[0]];
  auto x = std::sqrt(abar0) * x0 + std::sqrt(1 - abar0) * noise;
  for (int i = 0; i < s.num_steps(); ++i) {
    const double abar = s.schedule().alpha_bar[s.timesteps()[i]];
    auto eps = (x - std::sqrt(abar) * x0) / std::sqrt(1 - abar);
    x = s.step(i, x, std::sqrt(abar) * eps - std::sqrt(1 - abar) * x0, at::Tensor());
  }
  BOOST_CHECK_LT((x - x0).abs().max().item<double>(), 1e-9);
}

BOOST_AUTO_TEST_CASE(euler_flow_with_the_exact_velocity_of_a_point_recovers_it) {
  // For data concentrated at x0 the flow's velocity at (x, t) is (x - x0) / t; Euler steps
  // on it are exact (the paths are straight lines).
  EulerFlowOptions o;
  o.steps = 7;
  EulerFlowSampler s(o);
  BOOST_CHECK_EQUAL(s.timesteps().front(), 1000);
  auto x0 = at::rand({2, 1, 4, 4}, at::kDouble) * 2 - 1;
  auto x = at::randn({2, 1, 4, 4}, at::kDouble);
  for (int i = 0; i < s.num_steps(); ++i) {
    const double t = 1.0 - double(i) / o.steps;
    x = s.step(i, x, (x - x0) / t, at::Tensor());
  }
  BOOST_CHECK_LT((x - x0).abs().max().item<double>(), 1e-12);
}

BOOST_AUTO_TEST_CASE(ddpm_last_step_is_the_posterior_mean_and_adds_no_noise) {
  DdpmOptions o;
  o.steps = 5;
  DdpmSampler s(o);
  auto x = at::randn({1, 1, 4, 4});
  auto eps = at::zeros_like(x);
  auto a = s.step(4, x, eps, at::randn_like(x));
  auto b = s.step(4, x, eps, at::randn_like(x));
  BOOST_CHECK(at::equal(a, b));
  // Earlier steps do use the noise.
  BOOST_CHECK(!at::equal(s.step(0, x, eps, at::randn_like(x)), s.step(0, x, eps, at::randn_like(x))));
}

BOOST_AUTO_TEST_SUITE_END()
