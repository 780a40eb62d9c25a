// Every metric, one line each.
#include "framework/registries.h"
#include "metrics/exact_match.h"
#include "metrics/gsm8k.h"
#include "metrics/metrics.h"
#include "metrics/sample_quality.h"
#include "metrics/token_match.h"
#include "metrics/video.h"

namespace cachelab {

void register_metrics() {
  auto& r = metrics();
  r.add<MseMetric, NoOptions>("mse", "mean squared error of final samples vs the reference samples", __FILE__);
  r.add<PsnrMetric, RangeOptions>("psnr", "PSNR (dB) of final samples vs the reference samples", __FILE__);
  r.add<SsimMetric, RangeOptions>("ssim", "mean SSIM (11x11 Gaussian window) vs the reference samples", __FILE__);
  r.add<FidMetric, FidOptions>("fid", "Frechet distance on the LeNet judge's features: fid (vs real data), fid_ref (vs reference)", __FILE__);
  r.add<SampleQualityMetric, SampleQualityOptions>(
      "sample_quality", "ADM evaluator's numbers on the judge: fid_batch, fid_vs_reference, inception_score, precision, recall",
      __FILE__);
  r.add<TokenMatchMetric, NoOptions>("token_match", "fraction of tokens (and of whole sequences) equal to the reference's", __FILE__);
  r.add<ExactMatchMetric, LmTaskOptions>("exact_match", "fraction of generated answers a task's checker accepts (mdlm pipeline with a task)", __FILE__);
  r.add<Gsm8kMetric, Gsm8kOptions>("gsm8k", "GSM8K accuracy of an mdlm_text run: the number after `####` (else the last) vs each line's answer", __FILE__);
  r.add<VideoQualityMetric, VideoQualityOptions>("video_quality", "AR video rollouts vs the ground truth (psnr_gt), the reference and the judge (identity: the digit keeps its class)", __FILE__);
  r.add<AccuracyMetric, NoOptions>("accuracy", "fraction of samples the LeNet judge classifies as the class asked for (+ accuracy_worst_class)", __FILE__);
}

}  // namespace cachelab
