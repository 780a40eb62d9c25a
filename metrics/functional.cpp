#include "metrics/functional.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"

namespace cachelab {

double cosine_similarity(const at::Tensor& a, const at::Tensor& b) {
  auto fa = a.reshape({-1}).to(at::kDouble), fb = b.reshape({-1}).to(at::kDouble);
  const double den = std::sqrt(fa.dot(fa).item<double>() * fb.dot(fb).item<double>());
  return den > 0 ? fa.dot(fb).item<double>() / den : std::numeric_limits<double>::quiet_NaN();
}

double rel_l1(const at::Tensor& a, const at::Tensor& ref) {
  const double num = (a.to(at::kDouble) - ref.to(at::kDouble)).abs().sum().item<double>();
  const double den = ref.to(at::kDouble).abs().sum().item<double>();
  if (den > 0) return num / den;
  return num > 0 ? std::numeric_limits<double>::infinity() : 0.0;
}

double mse(const at::Tensor& a, const at::Tensor& ref) {
  CL_CHECK(a.sizes() == ref.sizes(), "mse: shapes differ");
  return (a.to(at::kDouble) - ref.to(at::kDouble)).pow(2).mean().item<double>();
}

double psnr(const at::Tensor& a, const at::Tensor& ref, double data_range) {
  const double m = mse(a, ref);
  return m > 0 ? 10.0 * std::log10(data_range * data_range / m) : std::numeric_limits<double>::infinity();
}

double ssim(const at::Tensor& a, const at::Tensor& ref, double data_range) {
  CL_CHECK(a.dim() == 4 && a.sizes() == ref.sizes(), "ssim: expects two [N, C, H, W] tensors of the same shape");
  constexpr int kWin = 11;
  constexpr double kSigma = 1.5;
  CL_CHECK(a.size(2) >= kWin && a.size(3) >= kWin, "ssim: images must be at least 11x11");
  auto g = at::arange(kWin, at::kDouble) - (kWin - 1) / 2.0;
  g = at::exp(-(g * g) / (2 * kSigma * kSigma));
  g = g / g.sum();
  const int64_t C = a.size(1);
  auto w = at::outer(g, g).reshape({1, 1, kWin, kWin}).repeat({C, 1, 1, 1});
  auto x = a.to(at::kDouble), y = ref.to(at::kDouble);
  auto filt = [&](const at::Tensor& t) { return at::conv2d(t, w, at::Tensor(), at::IntArrayRef{1, 1}, at::IntArrayRef{0, 0}, at::IntArrayRef{1, 1}, C); };
  auto mx = filt(x), my = filt(y);
  auto sxx = filt(x * x) - mx * mx, syy = filt(y * y) - my * my, sxy = filt(x * y) - mx * my;
  const double c1 = std::pow(0.01 * data_range, 2), c2 = std::pow(0.03 * data_range, 2);
  auto map = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2));
  return map.mean().item<double>();
}

void feature_statistics(const at::Tensor& features, Eigen::VectorXd* mean, Eigen::MatrixXd* cov) {
  CL_CHECK(features.dim() == 2 && features.size(0) >= 2, "feature statistics need [N >= 2, F] features");
  auto f = features.to(at::kDouble).contiguous();
  const int64_t N = f.size(0), F = f.size(1);
  Eigen::Map<const Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>> m(f.data_ptr<double>(), N,
                                                                                              F);
  *mean = m.colwise().mean().transpose();
  Eigen::MatrixXd centered = m.rowwise() - mean->transpose();
  *cov = (centered.transpose() * centered) / double(N - 1);
}

double frechet_distance(const Eigen::VectorXd& mu1, const Eigen::MatrixXd& s1, const Eigen::VectorXd& mu2,
                        const Eigen::MatrixXd& s2) {
  CL_CHECK(mu1.size() == mu2.size() && s1.rows() == s2.rows(), "frechet distance: dimensions differ");
  // sqrt(S1) of the symmetric PSD S1, then the eigenvalues of sqrt(S1) S2 sqrt(S1) (also PSD):
  // tr((S1 S2)^(1/2)) = sum of their square roots. LAPACK's symmetric eigensolver (through
  // LibTorch): at 2048 dimensions (Inception features) several times faster than Eigen's.
  const int64_t n = s1.rows();
  auto t1 = at::from_blob(const_cast<double*>(s1.data()), {n, n}, at::kDouble);  // symmetric: layout-free
  auto t2 = at::from_blob(const_cast<double*>(s2.data()), {n, n}, at::kDouble);
  auto [ev1, vec1] = at::linalg_eigh(t1);
  auto sqrt1 = at::mm(vec1 * ev1.clamp_min(0).sqrt().unsqueeze(0), vec1.t());
  auto inner = at::mm(at::mm(sqrt1, t2), sqrt1);
  const double tr_sqrt = at::linalg_eigvalsh((inner + inner.t()) * 0.5).clamp_min(0).sqrt().sum().item<double>();
  // Clamped: rounding can leave a tiny negative value for identical inputs.
  return std::max(0.0, (mu1 - mu2).squaredNorm() + s1.trace() + s2.trace() - 2.0 * tr_sqrt);
}

InceptionScore inception_score(const at::Tensor& logits, int64_t split_size) {
  CL_CHECK(logits.dim() == 2 && logits.size(0) >= 1, "inception_score: expects logits [N, classes]");
  CL_CHECK(split_size >= 1, "inception_score: split_size must be >= 1");
  auto logp = at::log_softmax(logits.to(at::kDouble), 1);
  std::vector<double> scores;
  for (int64_t begin = 0; begin < logp.size(0); begin += split_size) {
    auto part = logp.narrow(0, begin, std::min(split_size, logp.size(0) - begin));
    auto log_marginal = at::logsumexp(part, 0) - std::log(double(part.size(0)));  // log mean_x p(y|x)
    auto kl = (part.exp() * (part - log_marginal)).sum(1).mean();
    scores.push_back(std::exp(kl.item<double>()));
  }
  InceptionScore s;
  s.splits = int(scores.size());
  for (double v : scores) s.mean += v / double(scores.size());
  for (double v : scores) s.std += (v - s.mean) * (v - s.mean) / double(scores.size());
  s.std = std::sqrt(s.std);
  return s;
}

namespace {

constexpr int64_t kRowBlock = 1024;

// Squared distances of the rows of a to the rows of b (float32, by norms and one product, as
// ADM's evaluator does), clamped at 0.
at::Tensor squared_distances(const at::Tensor& a, const at::Tensor& b) {
  auto d = a.pow(2).sum(1, true) - 2 * at::mm(a, b.t()) + b.pow(2).sum(1).unsqueeze(0);
  return d.clamp_min(0);
}

// Squared distance of each row to its k-th nearest other row.
at::Tensor manifold_radii(const at::Tensor& f, int k) {
  auto radii = at::empty({f.size(0)}, f.options());
  for (int64_t begin = 0; begin < f.size(0); begin += kRowBlock) {
    auto rows = f.narrow(0, begin, std::min(kRowBlock, f.size(0) - begin));
    auto d = squared_distances(rows, f);
    // index 0 of the sorted row is the point itself (distance 0)
    radii.narrow(0, begin, rows.size(0)).copy_(std::get<0>(at::kthvalue(d, k + 1, 1)));
  }
  return radii;
}

// The fraction of the points of `a` inside some ball of `b` (centres b, squared radii rb).
double covered(const at::Tensor& a, const at::Tensor& b, const at::Tensor& rb) {
  int64_t inside = 0;
  for (int64_t begin = 0; begin < a.size(0); begin += kRowBlock) {
    auto rows = a.narrow(0, begin, std::min(kRowBlock, a.size(0) - begin));
    inside += (squared_distances(rows, b) <= rb.unsqueeze(0)).any(1).sum().item<int64_t>();
  }
  return double(inside) / double(a.size(0));
}

}  // namespace

PrecisionRecall precision_recall(const at::Tensor& reference, const at::Tensor& samples, int k) {
  CL_CHECK(reference.dim() == 2 && samples.dim() == 2 && reference.size(1) == samples.size(1),
           "precision_recall: expects features [N, F] with the same F");
  CL_CHECK(k >= 1 && reference.size(0) > k && samples.size(0) > k,
           "precision_recall: each set needs more than k = " << k << " points (reference " << reference.size(0)
                                                             << ", samples " << samples.size(0) << ")");
  auto r = reference.to(at::kFloat).contiguous(), s = samples.to(at::kFloat).contiguous();
  PrecisionRecall pr;
  pr.precision = covered(s, r, manifold_radii(r, k));
  pr.recall = covered(r, s, manifold_radii(s, k));
  return pr;
}

}  // namespace cachelab
