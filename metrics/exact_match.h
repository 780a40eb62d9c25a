// `exact_match`: for masked-diffusion LMs decoding a task's test split (the mdlm pipeline's
// `task`), the fraction of samples whose generation (the tokens after the task's prompt, up to
// the first EOS) the task's checker accepts (framework/lm_tasks.h); exact_match_reference is the
// reference (uncached) run's, exact_match_loss the reference's minus this run's and
// exact_match_retained this run's over the reference's (NaN when the reference solves none). Options: the task's keys (task, digits, mul_digits, length), as
// the pipeline's. With `task` empty (the default) each sample's task is recognised from its
// prompt (the tasks' formats differ), so `metrics: [exact_match]` grades any task's run as
// long as digits, mul_digits and length match the pipeline's. Visual tasks (read_digits, ...)
// are graded against the samples' labels (the numbers their images show).
#pragma once
#include "metrics/metrics.h"
#include "framework/lm_tasks.h"

namespace cachelab {

class ExactMatchMetric final : public Metric {
 public:
  explicit ExactMatchMetric(const LmTaskOptions& o);
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;

 private:
  double fraction(const at::Tensor& tokens, const at::Tensor& labels) const;
  std::vector<LmTask> tasks_;  // one, or every task when recognising
};

}  // namespace cachelab
