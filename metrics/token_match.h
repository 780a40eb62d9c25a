// `token_match`: for token samples (masked-diffusion LMs), the fraction of positions whose
// final token equals the reference run's; also token_match_sequences, the fraction of
// sequences equal in full. 1 = the variant decoded exactly what the uncached run decoded.
#pragma once
#include "metrics/metrics.h"

namespace cachelab {

class TokenMatchMetric final : public Metric {
 public:
  explicit TokenMatchMetric(const NoOptions&) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
};

}  // namespace cachelab
