// The registered summary metrics (options structs and classes); kernels in functional.h.
#pragma once
#include <string>

#include "framework/metric.h"

namespace cachelab {

struct RangeOptions {
  double data_range = 2.0;  // max - min of the pixel range ([-1, 1] images)
  template <class V>
  void fields(V& v) {
    v("data_range", data_range, "pixel value range (2 for [-1, 1])");
  }
};
struct NoOptions {
  template <class V>
  void fields(V&) {}
};
struct FidOptions {
  std::string dataset = "mnist";  // real statistics from this data set
  std::string split = "test";
  template <class V>
  void fields(V& v) {
    v("dataset", dataset, "data set of the real statistics (mnist | fashion-mnist); must be the judge's");
    v("split", split, "split of the real statistics (test | train)");
  }
};

class MseMetric final : public Metric {
 public:
  explicit MseMetric(const NoOptions&) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
};
class PsnrMetric final : public Metric {
 public:
  explicit PsnrMetric(const RangeOptions& o) : o_(o) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;

 private:
  RangeOptions o_;
};
class SsimMetric final : public Metric {
 public:
  explicit SsimMetric(const RangeOptions& o) : o_(o) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;

 private:
  RangeOptions o_;
};
// Frechet distance on the judge's (LeNet) features: `fid` vs the real data set, `fid_ref` vs the
// reference run's samples.
class FidMetric final : public Metric {
 public:
  bool needs_judge() const override { return true; }
  explicit FidMetric(const FidOptions& o) : o_(o) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
  std::vector<std::string> files(const std::string& data_dir) const override;

 private:
  FidOptions o_;
};
class AccuracyMetric final : public Metric {
 public:
  bool needs_judge() const override { return true; }
  explicit AccuracyMetric(const NoOptions&) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
};

}  // namespace cachelab
