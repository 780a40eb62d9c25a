// Metric kernels against values worked out by hand on small inputs.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "framework/error.h"
#include "metrics/functional.h"

using namespace cachelab;

BOOST_AUTO_TEST_SUITE(functional)

BOOST_AUTO_TEST_CASE(cosine_and_rel_l1_by_hand) {
  auto a = at::tensor({1.0, 0.0}), b = at::tensor({0.0, 2.0}), c = at::tensor({3.0, 0.0});
  BOOST_CHECK_SMALL(cachelab::cosine_similarity(a, b), 1e-12);
  BOOST_CHECK_CLOSE(cachelab::cosine_similarity(a, c), 1.0, 1e-10);
  BOOST_CHECK_CLOSE(cachelab::cosine_similarity(at::tensor({1.0, 1.0}), at::tensor({1.0, 0.0})), 1 / std::sqrt(2.0), 1e-10);
  // |1-2| + |2-2| = 1 over |2| + |2| = 4.
  BOOST_CHECK_CLOSE(rel_l1(at::tensor({1.0, 2.0}), at::tensor({2.0, 2.0})), 0.25, 1e-10);
  BOOST_CHECK_EQUAL(rel_l1(at::zeros({3}), at::zeros({3})), 0.0);
  BOOST_CHECK(std::isinf(rel_l1(at::ones({3}), at::zeros({3}))));
}

BOOST_AUTO_TEST_CASE(mse_and_psnr_of_a_constant_offset) {
  auto ref = at::zeros({2, 1, 4, 4});
  auto x = ref + 0.1;
  BOOST_CHECK_CLOSE(mse(x, ref), 0.01, 1e-4);
  // 10 log10(2^2 / 0.01) = 10 log10(400) = 26.0206 dB.
  BOOST_CHECK_CLOSE(psnr(x, ref), 10 * std::log10(400.0), 1e-4);
  BOOST_CHECK(std::isinf(psnr(ref, ref)));
}

// Direct double-loop SSIM with the same window, for a hand-checkable reference.
double ssim_loops(const at::Tensor& a, const at::Tensor& b) {
  const int W = 11, H = int(a.size(2));
  double g[11], gs = 0;
  for (int i = 0; i < W; ++i) gs += g[i] = std::exp(-std::pow(i - 5, 2) / (2 * 1.5 * 1.5));
  auto A = a.accessor<double, 4>(), B = b.accessor<double, 4>();
  const double c1 = std::pow(0.02, 2), c2 = std::pow(0.06, 2);
  double total = 0;
  int n = 0;
  for (int y = 0; y + W <= H; ++y)
    for (int x = 0; x + W <= H; ++x) {
      double mx = 0, my = 0, sxx = 0, syy = 0, sxy = 0;
      for (int i = 0; i < W; ++i)
        for (int j = 0; j < W; ++j) {
          double w = g[i] * g[j] / (gs * gs), u = A[0][0][y + i][x + j], v = B[0][0][y + i][x + j];
          mx += w * u, my += w * v, sxx += w * u * u, syy += w * v * v, sxy += w * u * v;
        }
      sxx -= mx * mx, syy -= my * my, sxy -= mx * my;
      total += ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
      ++n;
    }
  return total / n;
}

BOOST_AUTO_TEST_CASE(ssim_matches_a_direct_implementation) {
  auto gen = at::detail::createCPUGenerator(3);
  auto a = at::rand({1, 1, 12, 12}, gen, at::kDouble) * 2 - 1;
  auto b = (a + 0.3 * at::randn({1, 1, 12, 12}, gen, at::kDouble)).clamp(-1, 1);
  BOOST_CHECK_CLOSE(ssim(a, a), 1.0, 1e-9);
  BOOST_CHECK_CLOSE(ssim(a, b), ssim_loops(a, b), 1e-6);
  BOOST_CHECK_LT(ssim(a, b), 0.99);
}

BOOST_AUTO_TEST_CASE(frechet_distance_closed_forms) {
  // Diagonal covariances: sum (mu1 - mu2)^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
  Eigen::VectorXd m1(3), m2(3);
  m1 << 0, 1, 2;
  m2 << 1, 1, 0;
  Eigen::MatrixXd s1 = Eigen::Vector3d(1, 4, 9).asDiagonal(), s2 = Eigen::Vector3d(4, 1, 1).asDiagonal();
  const double want = (1 + 0 + 4) + (1 + 4 - 2 * 2) + (4 + 1 - 2 * 2) + (9 + 1 - 2 * 3);
  BOOST_CHECK_CLOSE(frechet_distance(m1, s1, m2, s2), want, 1e-9);
  BOOST_CHECK_SMALL(frechet_distance(m1, s1, m1, s1), 1e-9);
  // Non-diagonal but commuting-free check: identical full covariance -> only the mean term.
  Eigen::MatrixXd full(2, 2);
  full << 2, 0.5, 0.5, 1;
  Eigen::VectorXd a(2), b(2);
  a << 0, 0;
  b << 3, 4;
  BOOST_CHECK_CLOSE(frechet_distance(a, full, b, full), 25.0, 1e-9);
}

BOOST_AUTO_TEST_CASE(feature_statistics_by_hand) {
  auto f = at::tensor({1.0, 2.0, 3.0, 4.0, 5.0, 9.0}).reshape({3, 2});  // rows (1,2) (3,4) (5,9)
  Eigen::VectorXd mu;
  Eigen::MatrixXd cov;
  feature_statistics(f, &mu, &cov);
  BOOST_CHECK_CLOSE(mu(0), 3.0, 1e-12);
  BOOST_CHECK_CLOSE(mu(1), 5.0, 1e-12);
  BOOST_CHECK_CLOSE(cov(0, 0), 4.0, 1e-12);   // (4 + 0 + 4) / 2
  BOOST_CHECK_CLOSE(cov(1, 1), 13.0, 1e-12);  // (9 + 1 + 16) / 2
  BOOST_CHECK_CLOSE(cov(0, 1), 7.0, 1e-12);   // (6 + 0 + 8) / 2
}

BOOST_AUTO_TEST_CASE(inception_score_limits_and_splits) {
  // Identical predictions: p(y|x) = p(y), KL 0, score 1.
  BOOST_CHECK_CLOSE(inception_score(at::randn({1, 7}).repeat({12, 1})).mean, 1.0, 1e-9);
  // Confident and evenly spread over 4 classes: score 4 (ln 4 nats per sample).
  auto confident = at::full({8, 4}, -60.0);
  for (int i = 0; i < 8; ++i) confident[i][i % 4] = 60.0;
  auto s = inception_score(confident);
  BOOST_CHECK_CLOSE(s.mean, 4.0, 1e-6);
  BOOST_CHECK_EQUAL(s.splits, 1);
  // Splits of 4: the first all class 0 (score 1), the second over 4 classes (score 4).
  auto two = at::cat({at::full({4, 4}, -60.0).index_fill(1, at::tensor({int64_t(0)}), 60.0), confident.narrow(0, 0, 4)});
  auto s2 = inception_score(two, 4);
  BOOST_CHECK_EQUAL(s2.splits, 2);
  BOOST_CHECK_CLOSE(s2.mean, 2.5, 1e-6);
  BOOST_CHECK_CLOSE(s2.std, 1.5, 1e-6);
}

BOOST_AUTO_TEST_CASE(precision_recall_by_hand) {
  // 1-D, k = 1 (the nearest other point). Reference 0 1 2 3 10 100 101: radii 1 1 1 1 7 1 1.
  // Samples 0.5 5 20 31 60: radii 4.5 4.5 11 11 29.
  auto ref = at::tensor({0.0, 1.0, 2.0, 3.0, 10.0, 100.0, 101.0}).reshape({-1, 1});
  auto smp = at::tensor({0.5, 5.0, 20.0, 31.0, 60.0}).reshape({-1, 1});
  auto pr = precision_recall(ref, smp, 1);
  BOOST_CHECK_CLOSE(pr.precision, 2.0 / 5, 1e-9);  // 0.5 (near 0) and 5 (within 7 of 10)
  BOOST_CHECK_CLOSE(pr.recall, 5.0 / 7, 1e-9);     // all but 100, 101 (40 from 60, radius 29)
  // A set against itself covers itself; far apart sets cover nothing.
  auto f = at::randn({50, 8});
  auto self = precision_recall(f, f, 3);
  BOOST_CHECK_EQUAL(self.precision, 1.0);
  BOOST_CHECK_EQUAL(self.recall, 1.0);
  auto far = precision_recall(f, f + 100, 3);
  BOOST_CHECK_EQUAL(far.precision, 0.0);
  BOOST_CHECK_EQUAL(far.recall, 0.0);
  BOOST_CHECK_THROW(precision_recall(f.narrow(0, 0, 3), f, 3), cachelab::Error);
}

BOOST_AUTO_TEST_SUITE_END()
