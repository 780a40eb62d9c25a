#include "metrics/video.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "framework/error.h"

namespace cachelab {
namespace {

double psnr_of(double mse) {
  return mse > 0 ? 10.0 * std::log10(4.0 / mse) : std::numeric_limits<double>::infinity();  // range [-1, 1]
}

std::string frame_key(const char* what, int64_t f) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%s_f%03lld", what, (long long)f);
  return buf;
}

}  // namespace

at::Tensor crop_digits(const at::Tensor& frames, int digit_size) {
  CL_CHECK(frames.dim() == 4 && frames.size(1) == 1, "crop_digits: frames must be [N, 1, H, W], got " << frames.sizes());
  const int64_t N = frames.size(0), H = frames.size(2), W = frames.size(3), d = digit_size;
  CL_CHECK(d >= 1 && d <= H && d <= W, "crop_digits: digit_size " << d << " does not fit frames of " << H << " x " << W);
  auto ink = frames.to(at::kFloat).add(1.0).clamp_min(0.0).squeeze(1);  // [N, H, W] >= 0
  auto mass = ink.sum({1, 2});
  auto rows = at::arange(H, at::kFloat), cols = at::arange(W, at::kFloat);
  auto cy = (ink.sum(2) * rows).sum(1) / mass.clamp_min(1e-6), cx = (ink.sum(1) * cols).sum(1) / mass.clamp_min(1e-6);
  auto blank = mass < 1e-6;
  cy = at::where(blank, at::full_like(cy, (H - 1) / 2.0), cy);
  cx = at::where(blank, at::full_like(cx, (W - 1) / 2.0), cx);
  std::vector<at::Tensor> crops;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t y = std::clamp<int64_t>(std::llround(cy[i].item<double>() - (d - 1) / 2.0), 0, H - d);
    const int64_t x = std::clamp<int64_t>(std::llround(cx[i].item<double>() - (d - 1) / 2.0), 0, W - d);
    crops.push_back(frames[i].to(at::kFloat).narrow(1, y, d).narrow(2, x, d));
  }
  auto c = at::stack(crops);  // [N, 1, d, d]
  if (d != 28) c = at::upsample_bilinear2d(c, {28, 28}, /*align_corners=*/false);
  return at::constant_pad_nd(c, {2, 2, 2, 2}, -1.0);
}

std::vector<std::pair<std::string, double>> VideoQualityMetric::compute(const MetricInputs& in) {
  CL_CHECK(in.samples.dim() == 5, "video_quality: needs video samples [N, F, C, H, W] (the video pipeline)");
  CL_CHECK(in.truth.defined() && in.truth.sizes() == in.samples.sizes(),
           "video_quality: needs the ground-truth videos: set the video pipeline's `data` (e.g. moving_mnist)");
  CL_CHECK(in.judge, "video_quality: needs the judge (LeNet) to judge the digit's identity");
  const int64_t N = in.samples.size(0), F = in.samples.size(1), G = o_.cond_frames;
  CL_CHECK(G < F, "video_quality: cond_frames " << G << " leaves no generated frame of " << F);
  CL_CHECK(in.samples.narrow(1, 0, G).equal(in.truth.narrow(1, 0, G).to(in.samples.scalar_type())),
           "video_quality: the first " << G << " frames differ from the ground truth: set the metric's cond_frames to "
                                        "the pipeline's");
  const auto x = in.samples.to(at::kFloat), truth = in.truth.to(at::kFloat), ref = in.reference.to(at::kFloat);
  auto gen = [&](const at::Tensor& v) { return v.narrow(1, G, F - G); };
  auto frame_mse = [&](const at::Tensor& a, const at::Tensor& b) {  // [F - G], pooled over samples
    return (gen(a) - gen(b)).pow(2).mean({0, 2, 3, 4});
  };
  const auto mse_gt = frame_mse(x, truth);
  const at::Tensor mse_ref = ref.defined() && ref.sizes() == x.sizes() ? frame_mse(x, ref) : at::Tensor();
  const int64_t L = std::min<int64_t>(o_.last, F - G);
  auto pooled = [&](const at::Tensor& m, int64_t from) { return psnr_of(m.narrow(0, from, m.size(0) - from).mean().item<double>()); };
  // The judge's class of every frame [N, F].
  const int64_t C = x.size(2), H = x.size(3), W = x.size(4);
  CL_CHECK(C == 1, "video_quality: the judge reads 1-channel frames, got " << C);
  std::vector<at::Tensor> classes;
  const auto flat = x.reshape({N * F, 1, H, W});
  for (int64_t i = 0; i < N * F; i += 256) {
    const int64_t n = std::min<int64_t>(256, N * F - i);
    classes.push_back(in.judge->logits(crop_digits(flat.narrow(0, i, n), o_.digit_size)).argmax(1));
  }
  const auto cls = at::cat(classes).reshape({N, F});
  const auto same = gen(cls).eq(cls.select(1, 0).unsqueeze(1)).to(at::kDouble);  // [N, F - G]
  std::vector<std::pair<std::string, double>> out = {
      {"psnr_gt", pooled(mse_gt, 0)},
      {"psnr_gt_last", pooled(mse_gt, mse_gt.size(0) - L)},
      {"identity", same.mean().item<double>()},
      {"identity_last", same.narrow(1, F - G - L, L).mean().item<double>()},
  };
  if (mse_ref.defined()) out.push_back({"psnr_ref_last", pooled(mse_ref, mse_ref.size(0) - L)});
  if (in.labels.defined() && in.labels.numel() == N)
    out.push_back({"identity_label", gen(cls).eq(in.labels.to(at::kLong).unsqueeze(1)).to(at::kDouble).mean().item<double>()});
  if (o_.per_frame)
    for (int64_t f = G; f < F; ++f) {
      out.push_back({frame_key("psnr_gt", f), psnr_of(mse_gt[f - G].item<double>())});
      if (mse_ref.defined()) out.push_back({frame_key("psnr_ref", f), psnr_of(mse_ref[f - G].item<double>())});
      out.push_back({frame_key("identity", f), same.select(1, f - G).mean().item<double>()});
    }
  return out;
}

}  // namespace cachelab
