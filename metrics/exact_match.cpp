#include "metrics/exact_match.h"

#include <ATen/ATen.h>

#include <limits>

#include "framework/error.h"

namespace cachelab {

ExactMatchMetric::ExactMatchMetric(const LmTaskOptions& o) {
  CL_CHECK(o.task != "mix", "metric exact_match: `task: mix` is for training; name one task, or leave `task` empty to "
                            "recognise each sample's task from its prompt");
  if (!o.task.empty()) {
    tasks_.emplace_back(o);
    return;
  }
  for (const auto& name : lm_task_names()) tasks_.emplace_back(o, name);
}

double ExactMatchMetric::fraction(const at::Tensor& tokens, const at::Tensor& labels) const {
  CL_CHECK(tokens.defined() && tokens.dim() == 2 && !tokens.is_floating_point(),
           "exact_match checks token ids [N, L]: these samples are not (an mdlm pipeline's run is)");
  if (tasks_.size() == 1) return exact_match_fraction(tasks_[0], tokens, labels);
  const int64_t N = tokens.size(0);
  CL_CHECK(N > 0, "exact_match: no samples");
  double right = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int k = recognise_task(tasks_, tokens[i]);
    CL_CHECK(k >= 0, "exact_match: sample " << i << "'s prompt is none of the tasks' (run the mdlm pipeline with a `task`, "
                                            << "and give the metric the same digits, mul_digits and length)");
    right += exact_match_fraction(tasks_[size_t(k)], tokens.narrow(0, i, 1),
                                  labels.defined() ? labels.narrow(0, i, 1) : labels);
  }
  return right / double(N);
}

std::vector<std::pair<std::string, double>> ExactMatchMetric::compute(const MetricInputs& in) {
  const double here = fraction(in.samples, in.labels);
  std::vector<std::pair<std::string, double>> out = {{"exact_match", here}};
  if (in.reference.defined()) {
    const double ref = fraction(in.reference, in.labels);
    out.push_back({"exact_match_reference", ref});
    out.push_back({"exact_match_loss", ref - here});  // accuracy lost against the reference (negative: gained)
    // The share of the reference's accuracy kept (papers' "preserving over 90% performance").
    out.push_back({"exact_match_retained", ref > 0 ? here / ref : std::numeric_limits<double>::quiet_NaN()});
  }
  return out;
}

}  // namespace cachelab
