// The `sample_quality` metric: the numbers ADM's evaluator reports, on the experiment's judge
// (for the papers' image models, `judge: {type: inception}`, pytorch-fid's InceptionV3):
//   fid_batch          Frechet distance to a reference batch (.npz, e.g. ADM's
//                      VIRTUAL_imagenet256_labeled.npz) when one is given
//   fid_vs_reference   Frechet distance to the uncached reference run's samples
//   inception_score    on the judge's logits (splits of split_size samples, as ADM's)
//   precision, recall  improved precision / recall (k-th neighbour), against the batch (or,
//                      without one, against the reference run's samples)
// And the helpers `cachelab fid` shares: features of an .npz's uint8 images, a reference
// batch's features cached beside it (by the judge's identity and the file's size and time).
#pragma once
#include <string>

#include "framework/metric.h"

namespace cachelab {

struct SampleQualityOptions {
  std::string reference_batch;  // .npz with arr_0 uint8 [N, H, W, 3]; "" = none
  int k = 3;
  int split_size = 5000;
  template <class V>
  void fields(V& v) {
    v("reference_batch", reference_batch,
      ".npz of real images (arr_0 uint8 NHWC, e.g. ADM's VIRTUAL_imagenet256_labeled.npz); empty = compare with the "
      "reference run only");
    v("k", k, "neighbourhood of precision / recall (ADM's evaluator: 3)");
    v("split_size", split_size, "samples per Inception Score split (ADM's evaluator: 5000)");
  }
  template <class C>
  void check(C& c) const {
    c.require(k >= 1, "k", "must be >= 1");
    c.require(split_size >= 1, "split_size", "must be >= 1");
  }
};

class SampleQualityMetric final : public Metric {
 public:
  explicit SampleQualityMetric(const SampleQualityOptions& o) : o_(o) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
  bool needs_judge() const override { return true; }
  std::vector<std::string> files(const std::string& data_dir) const override;

 private:
  SampleQualityOptions o_;
};

// The judge's features (and, if `logits`, its logits) of an .npz's arr_0 (uint8 [N, H, W, C]),
// read `batch` images at a time, with progress lines labelled `label` on long reads.
at::Tensor npz_features(const std::string& path, Evaluator& judge, int batch, const std::string& label,
                        at::Tensor* logits = nullptr);
// npz_features of a reference batch, cached in the process and, when the judge has an
// identity, in `<path>.features-<identity>.safetensors` beside it.
at::Tensor reference_batch_features(const std::string& path, Evaluator& judge, int batch = 50);

}  // namespace cachelab
