// A calibrator that needs several runs (a threshold search): `cachelab calibrate` tells it
// each run's FLOPs and final samples and runs again while it asks for more, then calls
// finish_calibration. A component implements it beside Calibrator (framework/layer.h).
#pragma once
#include <ATen/core/Tensor.h>

namespace cachelab {

class MultiRunCalibrator {
 public:
  virtual ~MultiRunCalibrator() = default;
  // Returns true to ask for one more run before finish_calibration.
  virtual bool another_run(double flops, const at::Tensor& samples) = 0;
};

}  // namespace cachelab
