#include "metrics/token_match.h"

#include <ATen/ATen.h>

#include "framework/error.h"

namespace cachelab {

std::vector<std::pair<std::string, double>> TokenMatchMetric::compute(const MetricInputs& in) {
  CL_CHECK(in.samples.defined() && in.reference.defined() && in.samples.sizes() == in.reference.sizes(),
           "token_match: the samples and the reference differ in shape");
  CL_CHECK(!in.samples.is_floating_point() && !in.reference.is_floating_point(),
           "token_match compares token ids: the samples are not integers (use mse or psnr for images and video)");
  CL_CHECK(in.samples.dim() >= 2 && in.samples.numel() > 0, "token_match: expects [N, L] token ids");
  auto same = in.samples.eq(in.reference).reshape({in.samples.size(0), -1});
  return {{"token_match", same.to(at::kDouble).mean().item<double>()},
          {"token_match_sequences", same.all(1).to(at::kDouble).mean().item<double>()}};
}

}  // namespace cachelab
