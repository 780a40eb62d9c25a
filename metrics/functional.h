// Metric kernels: pure functions over tensors (no I/O, no state).
// Images are float tensors [N, C, H, W] in [-1, 1] unless stated otherwise.
#pragma once
#include <ATen/core/Tensor.h>
#include <Eigen/Core>

namespace cachelab {

// Cosine similarity of the flattened tensors; NaN when either is all zeros.
double cosine_similarity(const at::Tensor& a, const at::Tensor& b);
// mean|a - ref| / mean|ref|; 0 when both are zero, inf when only ref is.
double rel_l1(const at::Tensor& a, const at::Tensor& ref);
double mse(const at::Tensor& a, const at::Tensor& ref);
// 10 log10(range^2 / mse) in dB over the whole tensor; inf when identical.
double psnr(const at::Tensor& a, const at::Tensor& ref, double data_range = 2.0);
// Mean SSIM (Wang et al. 2004): 11x11 Gaussian window, sigma 1.5, K1 0.01, K2 0.03,
// 'valid' filtering, averaged over pixels, channels and images.
double ssim(const at::Tensor& a, const at::Tensor& ref, double data_range = 2.0);

// Mean and unbiased covariance (N - 1) of features [N, F].
void feature_statistics(const at::Tensor& features, Eigen::VectorXd* mean, Eigen::MatrixXd* cov);
// Frechet distance between Gaussians: |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)), with
// tr (S1 S2)^(1/2) computed as the trace of the symmetric sqrt(S1)^T S2 sqrt(S1) form.
double frechet_distance(const Eigen::VectorXd& mu1, const Eigen::MatrixXd& s1, const Eigen::VectorXd& mu2,
                        const Eigen::MatrixXd& s2);

}  // namespace cachelab

namespace cachelab {

// Inception Score as ADM's evaluator computes it (Salimans et al. 2016): softmax of the
// logits, exp(mean KL(p(y|x) || p(y))) per split of `split_size` samples, then the mean over
// the splits (50,000 samples: 10 splits). `std` is the spread over the splits (0 for one).
struct InceptionScore {
  double mean = 0, std = 0;
  int splits = 0;
};
InceptionScore inception_score(const at::Tensor& logits, int64_t split_size = 5000);

// Improved precision and recall (Kynkaanniemi et al. 2019) as ADM's evaluator computes them:
// each set's manifold is the union of balls around its points whose radius is the distance
// to the point's k-th nearest neighbour in the same set (the point itself not counted);
// precision = the fraction of `samples` inside the reference manifold, recall = the fraction
// of `reference` inside the samples' manifold. Features [N, F] (the 2048-d pool features).
struct PrecisionRecall {
  double precision = 0, recall = 0;
};
PrecisionRecall precision_recall(const at::Tensor& reference, const at::Tensor& samples, int k = 3);

}  // namespace cachelab
