// `cachelab fid`: FID, Inception Score and precision / recall of a sample .npz against a
// reference .npz, on pytorch-fid's InceptionV3 (models/inception.h), as the papers score
// DiT-style samples (ADM's evaluator reads the same files; docs/full-size.md compares them).
#pragma once
#include <string>

namespace cachelab {
struct FidCommandOptions {
  std::string inception;  // converted pytorch-fid weights (tools/convert_inception.py)
  std::string output;     // JSON with every number ("" = print only)
  int batch = 50;         // images per Inception forward (pytorch-fid's default)
  int threads = 1;
  int k = 3;              // neighbourhood of precision / recall (ADM's evaluator: 3)
};
// samples, reference: .npz files with `arr_0` uint8 [N, H, W, 3] (reference: ADM's
// VIRTUAL_imagenet256_labeled.npz, whose stored `mu` / `sigma` are also compared against).
int fid_command(const std::string& samples, const std::string& reference, const FidCommandOptions& o);
}  // namespace cachelab
