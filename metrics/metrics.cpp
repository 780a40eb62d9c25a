#include "metrics/metrics.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>

#include "framework/error.h"
#include "metrics/functional.h"
#include "framework/idx_dataset.h"

namespace cachelab {
namespace {

Evaluator& need_judge(const MetricInputs& in, const char* metric) {
  CL_CHECK(in.judge, "metric `" << metric << "` needs a judge: set `judge:` in the experiment "
                                   "(default models/weights/lenet-mnist.safetensors)");
  return *in.judge;
}

struct Stats {
  Eigen::VectorXd mu;
  Eigen::MatrixXd cov;
};

// Feature statistics of a real dataset split, computed once per (judge, data set).
const Stats& real_stats(Evaluator& judge, const std::string& data_dir, const std::string& dataset,
                        const std::string& split) {
  static std::map<std::string, Stats> cache;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string key = std::to_string(reinterpret_cast<uintptr_t>(&judge)) + "|" + data_dir + "|" + dataset + "|" + split;
  auto it = cache.find(key);
  if (it != cache.end()) return it->second;
  auto data = load_idx_dataset(data_dir, dataset, split, 32);
  Stats s;
  feature_statistics(judge.features(data.images), &s.mu, &s.cov);
  return cache.emplace(key, std::move(s)).first->second;
}

}  // namespace

std::vector<std::pair<std::string, double>> MseMetric::compute(const MetricInputs& in) {
  return {{"mse", mse(in.samples, in.reference)}};
}
std::vector<std::pair<std::string, double>> PsnrMetric::compute(const MetricInputs& in) {
  return {{"psnr", psnr(in.samples, in.reference, o_.data_range)}};
}
std::vector<std::pair<std::string, double>> SsimMetric::compute(const MetricInputs& in) {
  return {{"ssim", ssim(in.samples, in.reference, o_.data_range)}};
}

std::vector<std::pair<std::string, double>> FidMetric::compute(const MetricInputs& in) {
  Evaluator& judge = need_judge(in, "fid");
  CL_CHECK(in.samples.size(0) >= 2, "fid needs at least 2 samples");
  CL_CHECK(judge.dataset().empty() || judge.dataset() == o_.dataset,
           "fid: the judge was trained on " << judge.dataset() << " but the real statistics are of " << o_.dataset
                                            << "; set the metric's dataset: {type: fid, dataset: " << judge.dataset()
                                            << "}");
  const Stats& real = real_stats(judge, in.data_dir, o_.dataset, o_.split);
  Stats gen, ref;
  feature_statistics(judge.features(in.samples), &gen.mu, &gen.cov);
  feature_statistics(judge.features(in.reference), &ref.mu, &ref.cov);
  return {{"fid", frechet_distance(gen.mu, gen.cov, real.mu, real.cov)},
          {"fid_ref", frechet_distance(gen.mu, gen.cov, ref.mu, ref.cov)}};
}

std::vector<std::string> FidMetric::files(const std::string& data_dir) const {
  // The real statistics' split, as load_idx_dataset names its files.
  const std::string prefix = data_dir + "/" + o_.dataset + "/" + (o_.split == "train" ? "train" : "t10k");
  return {prefix + "-images-idx3-ubyte", prefix + "-labels-idx1-ubyte"};
}

std::vector<std::pair<std::string, double>> AccuracyMetric::compute(const MetricInputs& in) {
  Evaluator& judge = need_judge(in, "accuracy");
  // One pass of the judge: the overall agreement is the per-class one weighted by class counts.
  const auto per_class = judge.class_accuracy(in.samples, in.labels);
  double worst = 1, hits = 0;
  for (int c = 0; c < int(per_class.size()); ++c) {
    if (std::isnan(per_class[c])) continue;
    worst = std::min(worst, per_class[c]);
    hits += per_class[c] * in.labels.eq(c).sum().item<double>();
  }
  return {{"accuracy", hits / in.labels.size(0)}, {"accuracy_worst_class", worst}};
}

}  // namespace cachelab
