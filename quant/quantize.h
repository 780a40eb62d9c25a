// Uniform integer quantization, as tensor functions: the arithmetic every quantizer in quant/
// shares (fake quantization for accuracy studies; real int8 kernels live in w8a8).
//
// A tensor is quantized in *rows*: the unit that gets its own scale. A weight [out, in] is
// one row per tensor (`tensor`), per output channel (`channel`) or per group of
// `group_size` consecutive input features of one output channel (`group`); an activation
// [..., K] is one row per tensor (a calibrated, static range) or per token (`token`: a
// dynamic range taken from each call's input).
//
// Symmetric, b bits: q in [-(2^(b-1)-1), 2^(b-1)-1], zero point 0, scale = max|range| / qmax.
// Asymmetric, b bits: q in [0, 2^b - 1], scale = (hi - lo) / (2^b - 1) with the range widened
// to include 0 (zero stays exact), zero point = round(-lo / scale).
// x ~ (clamp(round(x / scale) + zp, qmin, qmax) - zp) * scale. A row whose range is all zero
// gets scale 1.
//
// Calibrators choose each row's clipping range [lo, hi]:
//  - minmax: the row's min and max;
//  - percentile p: the p-th and (100-p)-th percentiles (symmetric: the p-th of |x|);
//  - mse: the range alpha * [min, max] with alpha in {1, 0.98, ..., 0.30} that minimises the
//    row's mean squared quantization error; alpha = 1 is min-max, so MSE clipping is never
//    worse than min-max on its own objective.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

namespace cachelab {

struct QuantSpec {
  int bits = 8;
  bool symmetric = true;
  std::string calibrator = "minmax";  // minmax | percentile | mse
  double percentile = 99.99;          // for `percentile`, in (50, 100]
};

// The integer grid of a spec.
int64_t quant_qmin(int bits, bool symmetric);
int64_t quant_qmax(int bits, bool symmetric);

// Per-row affine parameters (shapes [R, 1]) from clipping ranges lo, hi ([R, 1] or [R]).
struct RowQuant {
  at::Tensor scale, zero_point, lo, hi;  // float32 [R, 1]; zero_point holds integers
  int64_t qmin = 0, qmax = 0;
};
RowQuant row_quant(const at::Tensor& lo, const at::Tensor& hi, int bits, bool symmetric);

// Quantize-dequantize rows x [R, C] (float32) with per-row parameters.
at::Tensor quant_dequant_rows(const at::Tensor& x, const RowQuant& q);

// The clipping range per row of x [R, C] chosen by the spec's calibrator: {lo, hi}, [R, 1].
std::pair<at::Tensor, at::Tensor> calibrate_rows(const at::Tensor& x, const QuantSpec& spec);

// Quantize-dequantize rows with ranges chosen by the calibrator (weights, dynamic activations).
at::Tensor fake_quantize_rows(const at::Tensor& x, const QuantSpec& spec);

// A weight [out, in] fake-quantized with `granularity` tensor | channel | group (group_size
// must divide `in`); float32, same shape.
at::Tensor fake_quantize_weight(const at::Tensor& w, const QuantSpec& spec, const std::string& granularity,
                                int64_t group_size);

// An activation [..., K] fake-quantized with one dynamic range per token (row of K).
at::Tensor fake_quantize_per_token(const at::Tensor& x, const QuantSpec& spec);

// An activation fake-quantized with one static range [lo, hi] (per tensor).
at::Tensor fake_quantize_range(const at::Tensor& x, float lo, float hi, int bits, bool symmetric);

// A quantized layer's output error over one step's calls: add(y, ref) per call (its
// quantized and its full-precision output of the same input), then rel() =
// sqrt(sum |y - ref|^2 / sum |ref|^2), infinity when the reference is zero but y is not.
struct OutputError {
  double err2 = 0, ref2 = 0;
  int calls = 0;
  void add(const at::Tensor& y, const at::Tensor& ref);
  double rel() const;
};

// k-means (k-means++-style farthest-point start from the point nearest the mean, Lloyd
// iterations) on the rows of X [n, d]; returns one medoid row index per non-empty cluster
// (the member nearest its centroid), ascending. k >= n returns every row. Deterministic.
std::vector<int64_t> kmeans_medoids(const at::Tensor& X, int k, int iterations = 25);

}  // namespace cachelab
