// Samplers: schedule values, timestep spacing, and exact recovery with an oracle model.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "framework/error.h"
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

namespace {
// Integrates dx/dt = v(x, t) from t = 1 to 0 with a flow sampler, the model replaced by v at
// the sampler's model timestep / time_scale (so the timestep list is checked too).
template <class F>
at::Tensor integrate(const Sampler& s, int time_scale, at::Tensor x, F v) {
  std::vector<at::Tensor> state;
  for (int i = 0; i < s.num_steps(); ++i)
    x = s.advance(i, x, v(x, double(s.timesteps()[i]) / time_scale), at::Tensor(), state);
  return x;
}
}  // namespace

// The trapezoid rule is exact for a velocity linear in t: x(0) = x(1) - a - b / 2.
BOOST_AUTO_TEST_CASE(heun_flow_is_exact_for_a_velocity_linear_in_t) {
  HeunFlowOptions o;
  o.steps = 3;
  HeunFlowSampler s(o);
  BOOST_REQUIRE_EQUAL(s.num_steps(), 6);  // two evaluations per step
  const std::vector<int64_t> expect = {1000, 667, 667, 333, 333, 0};
  for (int i = 0; i < 6; ++i) BOOST_CHECK_EQUAL(s.timesteps()[i], expect[i]);
  HeunFlowOptions o4;
  o4.steps = 4;  // a grid whose model timesteps are exact
  HeunFlowSampler s4(o4);
  auto a = at::randn({2, 1, 4, 4}, at::kDouble), b = at::randn({2, 1, 4, 4}, at::kDouble);
  auto x1 = at::randn({2, 1, 4, 4}, at::kDouble);
  auto x = integrate(s4, 1000, x1, [&](const at::Tensor&, double t) { return a + t * b; });
  BOOST_CHECK_SMALL((x - (x1 - a - 0.5 * b)).abs().max().item<double>(), 1e-12);
  // Euler is not (its error here is b / (2 steps)), which shows the test can fail.
  EulerFlowOptions e;
  e.steps = 4;
  auto xe = integrate(EulerFlowSampler(e), 1000, x1, [&](const at::Tensor&, double t) { return a + t * b; });
  BOOST_CHECK_CLOSE((xe - (x1 - a - 0.5 * b)).abs().max().item<double>(), (b / 8).abs().max().item<double>(), 1e-6);
  // step() is refused: the corrector needs the predictor's values.
  BOOST_CHECK_THROW(s.step(0, x1, a, at::Tensor()), Error);
}

// On a smooth field, dx/dt = cos(t) x (solution x(0) = x(1) exp(-sin 1)), Heun beats Euler at
// equal steps (measured here: 0.30x Euler's error at 5 steps, 0.14x at 10) and at equal
// evaluations, and their errors shrink as h^2 and h: observed orders log2(e(N) / e(2N)).
BOOST_AUTO_TEST_CASE(heun_flow_is_second_order_and_euler_first_order) {
  auto x1 = at::randn({3, 1, 4, 4}, at::kDouble);
  auto exact = x1 * std::exp(-std::sin(1.0));
  auto field = [](const at::Tensor& x, double t) { return std::cos(t) * x; };
  auto err = [&](const Sampler& s) { return (integrate(s, 1000, x1, field) - exact).abs().max().item<double>(); };
  std::vector<double> eh, ee;
  for (int n : {5, 10, 20}) {
    HeunFlowOptions h;
    h.steps = n;
    EulerFlowOptions e;
    e.steps = n;
    eh.push_back(err(HeunFlowSampler(h)));
    ee.push_back(err(EulerFlowSampler(e)));
    BOOST_CHECK_LT(eh.back(), 0.5 * ee.back());
  }
  // Also at equal model evaluations (Heun n steps against Euler 2n).
  for (int k = 0; k + 1 < 3; ++k) BOOST_CHECK_LT(eh[k], ee[k + 1]);
  for (int k = 0; k + 1 < 3; ++k) {
    const double heun_order = std::log2(eh[k] / eh[k + 1]), euler_order = std::log2(ee[k] / ee[k + 1]);
    BOOST_TEST_MESSAGE("orders: heun " << heun_order << ", euler " << euler_order);
    BOOST_CHECK(heun_order > 1.8 && heun_order < 2.2);
    BOOST_CHECK(euler_order > 0.8 && euler_order < 1.2);
  }
}

BOOST_AUTO_TEST_SUITE_END()
