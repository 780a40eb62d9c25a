// Summary metrics of a finished run, registered by name (`metrics: [psnr, ssim, fid]`).
// The numeric kernels live in metrics/functional.h as pure functions over tensors.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <utility>
#include <vector>

namespace cachelab {

// A trained network that judges samples: class agreement, and the feature space FID is
// computed in (lenet-mnist; pytorch-fid's InceptionV3 for the papers' image models).
// Registered in evaluators(); the experiment's `judge:` names one. Images are as the
// samples are: [N, C, H, W] in [-1, 1].
class Evaluator {
 public:
  virtual ~Evaluator() = default;
  virtual at::Tensor features(const at::Tensor& images) = 0;  // [N, F]
  // Agreement with `labels` within each class (NaN for a class absent from `labels`).
  virtual std::vector<double> class_accuracy(const at::Tensor& images, const at::Tensor& labels) = 0;
  // The data set the judge was trained on (mnist, fashion-mnist), "" when unknown: metrics
  // that compare with real data check it.
  virtual std::string dataset() const { return ""; }
  // Class logits [N, classes] (the Inception Score's); by default the judge has none.
  virtual at::Tensor logits(const at::Tensor& images);
  // What identifies the judge's weights (a digest), for caches of features on disk; "" = none.
  virtual std::string identity() const { return ""; }
};

struct MetricInputs {
  at::Tensor samples;    // [N, C, H, W] float32 in [-1, 1], final samples of the variant
  at::Tensor reference;  // [N, C, H, W] the reference run's samples (same seeds, same labels)
  at::Tensor labels;     // [N] int64, the classes asked for
  at::Tensor truth;      // [N, ...] the data the samples should equal (AR video: the data set's frames), or undefined
  Evaluator* judge = nullptr;    // may be null: metrics that need it then throw a clear error
  std::string data_dir;          // where datasets live (FID's real statistics)
};

class Metric {
 public:
  virtual ~Metric() = default;
  // Named values, e.g. {{"psnr", 31.2}}; a metric may return several (fid -> fid, fid_ref).
  virtual std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) = 0;
  // Whether compute() reads MetricInputs::judge (the session loads it before any run).
  virtual bool needs_judge() const { return false; }
  // Files compute() will read under `data_dir` (checked before anything runs).
  virtual std::vector<std::string> files(const std::string& data_dir) const {
    (void)data_dir;
    return {};
  }
};

}  // namespace cachelab
