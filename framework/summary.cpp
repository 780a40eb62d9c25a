#include "framework/summary.h"

#include <algorithm>

#include "framework/error.h"

namespace cachelab {

double quantile(std::vector<double> v, double f) {
  CL_CHECK(!v.empty(), "quantile of no values");
  std::sort(v.begin(), v.end());
  const double pos = f * double(v.size() - 1);
  const size_t lo = size_t(pos), hi = std::min(v.size() - 1, lo + 1);
  return v[lo] + (v[hi] - v[lo]) * (pos - double(lo));
}

void add_timing_summary(std::map<std::string, double>& summary, const std::vector<double>& reference_s,
                        const std::vector<double>& variant_s) {
  std::vector<double> ratio;
  for (size_t i = 0; i < reference_s.size() && i < variant_s.size(); ++i) ratio.push_back(reference_s[i] / variant_s[i]);
  if (ratio.empty()) return;
  summary["speedup_wall"] = quantile(ratio, 0.5);
  summary["speedup_wall_q25"] = quantile(ratio, 0.25);
  summary["speedup_wall_q75"] = quantile(ratio, 0.75);
  summary["speedup_wall_min"] = quantile(ratio, 0.0);
  summary["speedup_wall_max"] = quantile(ratio, 1.0);
  summary["timing_reps"] = double(ratio.size());
  // A wall-clock speedup above the FLOPs speedup is suspect unless explained (int8
  // multiply-adds are cheaper than fp32 ones; FLOPs count them alike).
  auto flops = summary.find("speedup_flops");
  CL_CHECK(flops != summary.end(), "internal: speedup_flops must be summarised before the timings");
  summary["speedup_wall_suspect"] = summary["speedup_wall_q25"] > 1.05 * flops->second ? 1.0 : 0.0;
}

double reuse_fraction(const std::vector<StepRecord>& steps) {
  double visited = 0, reused = 0;
  for (auto& st : steps)
    for (auto d : st.decision) {
      if (d == 3 /* Decision::Skipped */) continue;
      visited += 1;
      reused += d == 1 /* Reuse */ || d == 2 /* Predict */;
    }
  return visited > 0 ? reused / visited : 0;
}

double peak_site_extra_sum(const std::vector<StepRecord>& steps, int extra) {
  if (extra < 0) return -1;
  double peak = 0;
  for (auto& st : steps) {
    if (size_t(extra) >= st.site_extra.size()) continue;
    double sum = 0;
    for (double v : st.site_extra[size_t(extra)])
      if (v == v) sum += v;
    peak = std::max(peak, sum);
  }
  return peak;
}

}  // namespace cachelab
