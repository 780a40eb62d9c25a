// `video_quality`: AR video rollouts against the ground truth (the data set's videos, from
// the video pipeline's `data`), the uncached reference rollout and the judge, over the
// generated frames (the first cond_frames frames are given, so they are skipped):
//   psnr_gt, psnr_gt_last         PSNR (dB, from the MSE pooled over samples and frames) of the
//                                 generated frames against the ground truth; _last: the last
//                                 `last` frames only
//   psnr_ref_last                 the same against the reference rollout (inf where equal)
//   identity, identity_last       the fraction of generated frames whose digit the judge
//                                 (LeNet, on the digit cropped around the frame's centre of
//                                 mass, resized to 28 x 28) puts in the class it gives the
//                                 first frame: does the digit keep its identity
//   identity_label                the same against the data set's label
//   per_frame: true adds psnr_gt_fNNN, psnr_ref_fNNN and identity_fNNN for every generated
//   frame NNN (over samples): quality over time.
#pragma once
#include <ATen/core/Tensor.h>

#include "framework/metric.h"

namespace cachelab {

struct VideoQualityOptions {
  int cond_frames = 2;   // the pipeline's given frames (checked against the samples)
  int last = 16;         // frames at the end of the rollout for the *_last values
  int digit_size = 14;   // side of the crop around the digit (the data's digit_size)
  bool per_frame = false;
  template <class V>
  void fields(V& v) {
    v("cond_frames", cond_frames, "leading frames the pipeline gave (equal to the ground truth; skipped)");
    v("last", last, "frames at the end of the rollout that the *_last values average");
    v("digit_size", digit_size, "side of the crop around each frame's digit for the judge (the data's digit_size)");
    v("per_frame", per_frame, "also report every generated frame's psnr_gt_fNNN, psnr_ref_fNNN, identity_fNNN");
  }
  template <class C>
  void check(C& c) const {
    c.require(cond_frames >= 1, "cond_frames", "must be >= 1 (the identity is judged against the first frame)");
    c.require(last >= 1, "last", "must be >= 1");
    c.require(digit_size >= 4 && digit_size <= 32, "digit_size", "must be in [4, 32]");
  }
};

class VideoQualityMetric final : public Metric {
 public:
  explicit VideoQualityMetric(const VideoQualityOptions& o) : o_(o) {}
  std::vector<std::pair<std::string, double>> compute(const MetricInputs& in) override;
  bool needs_judge() const override { return true; }

 private:
  VideoQualityOptions o_;
};

// Crops each frame's digit around its centre of mass (ink above the -1 background) to a
// digit_size square, resizes it to 28 x 28 and pads it to 32 x 32, as LeNet saw MNIST:
// frames [N, 1, H, W] in [-1, 1] -> [N, 1, 32, 32]. A blank frame crops the centre.
at::Tensor crop_digits(const at::Tensor& frames, int digit_size);

}  // namespace cachelab
