// The training objectives (epsilon MSE + the learned-variance bound term; rectified flow) and the trainer.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <csignal>
#include <fstream>

#include "framework/interrupt.h"
#include "framework/safetensors.h"
#include "framework/site.h"
#include "models/diffusion_loss.h"
#include "models/samplers.h"
#include "models/train.h"
#include "tests/test_util.h"

using namespace cachelab;
using cachelab::testing::TempDir;

BOOST_AUTO_TEST_SUITE(diffusion_loss_suite)

BOOST_AUTO_TEST_CASE(normal_kl_matches_hand_values) {
  auto z = at::zeros({1}, at::kDouble), one = at::ones({1}, at::kDouble);
  BOOST_CHECK_SMALL(normal_kl(z, z, z, z).item<double>(), 1e-15);
  // KL(N(0, 1) || N(1, e)) = (1 - 0 - 1 + 1/e + 1/e) / 2 = 1/e.
  BOOST_CHECK_CLOSE(normal_kl(z, z, one, one).item<double>(), std::exp(-1.0), 1e-10);
  // KL(N(0, e^-2) || N(0, 1)) = (0 + 2 - 1 + e^-2) / 2.
  BOOST_CHECK_CLOSE(normal_kl(z, -2 * one, z, z).item<double>(), (1 + std::exp(-2.0)) / 2, 1e-10);
}

// The 256 bins of [-1, 1] (end bins take the tails) form a distribution: probabilities sum to 1.
BOOST_AUTO_TEST_CASE(discretized_likelihood_sums_to_one_over_the_bins) {
  auto bins = at::linspace(-1, 1, 256, at::kDouble);
  for (double mean : {-1.0, -0.3, 0.0, 0.8})
    for (double log_scale : {-5.0, -2.0, 0.0}) {
      auto lp = discretized_gaussian_log_likelihood(bins, at::full_like(bins, mean), at::full_like(bins, log_scale));
      BOOST_CHECK_CLOSE(at::exp(lp).sum().item<double>(), 1.0, 1e-6);
    }
  // A wide Gaussian: an inner bin's probability is about density x bin width.
  auto x = at::zeros({1}, at::kDouble);
  const double p = std::exp(discretized_gaussian_log_likelihood(x, x, x).item<double>());
  BOOST_CHECK_CLOSE(p, (2.0 / 255) / std::sqrt(2 * M_PI), 0.01);
}

struct LossFixture {
  NoiseSchedule s = NoiseSchedule::linear();
  at::Tensor x0 = at::rand({6, 1, 4, 4}, at::kDouble) * 2 - 1;
  at::Tensor noise = at::randn({6, 1, 4, 4}, at::kDouble);
  at::Tensor t = at::tensor(std::vector<int64_t>{0, 1, 10, 200, 700, 999});
  at::Tensor xt = s.q_sample(x0, t, noise);
};

BOOST_FIXTURE_TEST_CASE(epsilon_only_output_gives_the_plain_mse, LossFixture) {
  auto eps = noise + 0.1 * at::randn_like(noise);
  auto l = diffusion_loss(s, eps, x0, xt, t, noise);
  BOOST_CHECK(!l.vb.defined());
  BOOST_CHECK_CLOSE(l.total().item<double>(), at::mse_loss(eps, noise).item<double>(), 1e-10);
}

// With the exact epsilon and the posterior variance (v = -1), the model's p(x_{t-1} | x_t)
// is the true posterior: the bound term is zero for every t > 0.
BOOST_FIXTURE_TEST_CASE(exact_model_has_zero_kl_and_kl_is_nonnegative, LossFixture) {
  auto exact = at::cat({noise, at::full_like(noise, -1.0)}, 1);
  auto l = diffusion_loss(s, exact, x0, xt, t, noise);
  BOOST_REQUIRE(l.vb.defined());
  for (int i = 1; i < 6; ++i) BOOST_CHECK_SMALL(l.vb[i].item<double>(), 1e-9);
  BOOST_CHECK_SMALL(l.mse.abs().max().item<double>(), 1e-12);
  auto off = at::cat({noise + 0.3 * at::randn_like(noise), at::rand_like(noise) * 2 - 1}, 1);
  auto l2 = diffusion_loss(s, off, x0, xt, t, noise);
  BOOST_CHECK(at::isfinite(l2.vb).all().item<bool>());
  for (int i = 1; i < 6; ++i) BOOST_CHECK_GT(l2.vb[i].item<double>(), 0.0);
  BOOST_CHECK_GT(l2.vb[0].item<double>(), 0.0);  // t = 0: a negative log-likelihood of 8-bit data
}

// The bound term trains the variance only: its gradient never reaches the epsilon channels.
BOOST_FIXTURE_TEST_CASE(bound_term_sees_the_mean_through_a_stop_gradient, LossFixture) {
  auto out = at::cat({noise + 0.3 * at::randn_like(noise), at::zeros_like(noise)}, 1).requires_grad_(true);
  diffusion_loss(s, out, x0, xt, t, noise).vb.sum().backward();
  auto g = out.grad();
  BOOST_CHECK_EQUAL(g.narrow(1, 0, 1).abs().max().item<double>(), 0.0);
  BOOST_CHECK_GT(g.narrow(1, 1, 1).abs().max().item<double>(), 0.0);
}

// A tiny learned-sigma DiT trains on MNIST, checkpoints, and resumes where it stopped.
BOOST_AUTO_TEST_CASE(training_checkpoints_and_resumes_with_learned_sigma) {
  TempDir d;
  DitOptions m = cachelab::testing::tiny_dit_options();
  m.input_size = 28;  // MNIST as stored
  m.patch_size = 7;
  m.depth = 2;
  m.learn_sigma = true;
  TrainOptions o;
  o.steps = 20;
  o.batch_size = 8;
  o.warmup = 5;
  o.checkpoint_every = 10;
  o.log_every = 10;
  o.checkpoint_dir = d.path + "/ckpt";
  o.output = d.path + "/out.safetensors";
  train_dit(m, o, "test");
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "20");
  o.steps = 30;
  train_dit(m, o, "test");  // resumes at 20
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "30");

  std::ifstream csv(o.checkpoint_dir + "/loss.csv");
  std::string line;
  std::getline(csv, line);
  BOOST_CHECK_EQUAL(line, "step,loss,lr,elapsed_s");
  int rows = 0, last = 0;
  while (std::getline(csv, line)) {
    int step;
    double loss;
    BOOST_REQUIRE(std::sscanf(line.c_str(), "%d,%lf", &step, &loss) == 2);
    BOOST_CHECK_EQUAL(step, last + 1);  // no step twice, none missing across the resume
    BOOST_CHECK(std::isfinite(loss));
    last = step;
    ++rows;
  }
  BOOST_CHECK_EQUAL(rows, 30);
  m.weights = o.output;
  Dit trained(m);  // the exported EMA weights load into a learned-sigma model
  PassThroughHooks h(trained.linears());
  auto y = trained.forward(at::randn({2, 1, 28, 28}), at::full({2}, 500.0),
                           cachelab::testing::labels(at::zeros({2}, at::kLong)), h);
  BOOST_CHECK_EQUAL(y.size(1), 2);
}

// Rectified flow: the target is the time derivative of the path x_t = (1 - t) x0 + t noise
// (a central difference of the path, exact up to rounding since the path is a line), and
// the loss at the exact velocity is zero.
BOOST_AUTO_TEST_CASE(flow_target_is_the_derivative_of_the_path_and_exact_velocity_has_zero_loss) {
  auto x0 = at::rand({5, 1, 4, 4}, at::kDouble) * 2 - 1;
  auto noise = at::randn({5, 1, 4, 4}, at::kDouble);
  auto t = at::tensor(std::vector<double>{0.0, 0.1, 0.5, 0.9, 1.0}, at::kDouble);
  // The ends of the path are the data and the noise.
  auto xt = flow_interpolate(x0, noise, t);
  BOOST_CHECK_SMALL((xt[0] - x0[0]).abs().max().item<double>(), 1e-15);
  BOOST_CHECK_SMALL((xt[4] - noise[4]).abs().max().item<double>(), 1e-15);
  const double h = 1e-4;
  auto fd = (flow_interpolate(x0, noise, t + h) - flow_interpolate(x0, noise, t - h)) / (2 * h);
  auto target = flow_velocity_target(x0, noise);
  BOOST_CHECK_SMALL((fd - target).abs().max().item<double>(), 1e-9);
  BOOST_CHECK_SMALL(flow_loss(target, x0, noise).abs().max().item<double>(), 1e-15);
  // Off the velocity the loss is the per-sample MSE.
  auto off = target + 0.5;
  auto l = flow_loss(off, x0, noise);
  BOOST_REQUIRE_EQUAL(l.size(0), 5);
  for (int i = 0; i < 5; ++i) BOOST_CHECK_CLOSE(l[i].item<double>(), 0.25, 1e-9);
  BOOST_CHECK_THROW(flow_loss(at::cat({target, target}, 1), x0, noise), Error);  // no learned sigma
}

// The flow objective trains a tiny DiT; init_from starts a new run from given weights (with a
// zero learning rate the exported EMA weights are those weights); flow + learn_sigma is refused.
BOOST_AUTO_TEST_CASE(flow_training_runs_and_init_from_loads_the_start_weights) {
  TempDir d;
  DitOptions m = cachelab::testing::tiny_dit_options();
  m.input_size = 28;
  m.patch_size = 7;
  m.depth = 2;
  TrainOptions o;
  o.objective = "flow";
  o.steps = 12;
  o.batch_size = 8;
  o.warmup = 2;
  o.checkpoint_every = 6;
  o.log_every = 6;
  o.checkpoint_dir = d.path + "/a";
  o.output = d.path + "/a.safetensors";
  train_dit(m, o, "test");
  auto a = read_safetensors(o.output);
  BOOST_CHECK_EQUAL(a.metadata.at("step"), "12");
  for (auto& kv : a.tensors) BOOST_CHECK(at::isfinite(kv.second).all().item<bool>());

  TrainOptions z = o;
  z.lr = 0;
  z.steps = 3;
  z.init_from = o.output;
  z.checkpoint_dir = d.path + "/b";
  z.output = d.path + "/b.safetensors";
  train_dit(m, z, "test");
  auto b = read_safetensors(z.output);
  BOOST_REQUIRE_EQUAL(a.tensors.size(), b.tensors.size());
  for (size_t i = 0; i < a.tensors.size(); ++i) {
    BOOST_REQUIRE_EQUAL(a.tensors[i].first, b.tensors[i].first);
    BOOST_CHECK_SMALL((a.tensors[i].second - b.tensors[i].second).abs().max().item<double>(), 1e-7);
  }

  m.learn_sigma = true;
  o.checkpoint_dir = d.path + "/c";
  o.output = d.path + "/c.safetensors";
  BOOST_CHECK_THROW(train_dit(m, o, "test"), Error);
  m.learn_sigma = false;
  o.objective = "velocity";
  BOOST_CHECK_THROW(train_dit(m, o, "test"), Error);
}

// SIGINT / SIGTERM stop the trainer after the step in flight, with a checkpoint at that step,
// and the resume continues from it.
BOOST_AUTO_TEST_CASE(training_stops_on_a_signal_with_a_checkpoint_and_resumes) {
  TempDir d;
  DitOptions m = cachelab::testing::tiny_dit_options();
  m.input_size = 28;
  m.patch_size = 7;
  m.depth = 1;
  TrainOptions o;
  o.objective = "flow";
  o.steps = 6;
  o.batch_size = 4;
  o.checkpoint_every = 100;
  o.checkpoint_dir = d.path + "/ckpt";
  o.output = d.path + "/out.safetensors";
  request_interrupt(SIGTERM);
  BOOST_CHECK_THROW(train_dit(m, o, "test"), Error);
  request_interrupt(0);
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "1");
  train_dit(m, o, "test");
  BOOST_CHECK_EQUAL(read_safetensors(o.output).metadata.at("step"), "6");
}

BOOST_AUTO_TEST_SUITE_END()
