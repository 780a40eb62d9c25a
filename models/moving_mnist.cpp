#include "models/moving_mnist.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "framework/error.h"
#include "framework/idx_dataset.h"

namespace cachelab {
namespace {

uint64_t mix(uint64_t x) {  // splitmix64's finaliser
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Position after bouncing off the walls of [0, hi]: the path folded into the interval.
double bounce(double p, double hi) {
  if (hi <= 0) return 0;
  const double period = 2 * hi;
  double r = std::fmod(p, period);
  if (r < 0) r += period;
  return r <= hi ? r : period - r;
}

}  // namespace

MovingMnist::MovingMnist(const MovingMnistOptions& o, const std::string& data_dir, const std::string& split) : o_(o) {
  CL_CHECK(o.digit_size >= 4 && o.digit_size <= 28 && o.canvas >= o.digit_size,
           "moving mnist: digit_size must be in [4, 28] and canvas >= digit_size (got " << o.digit_size << ", "
                                                                                         << o.canvas << ")");
  CL_CHECK(o.num_digits >= 1 && o.num_digits <= 2, "moving mnist: num_digits must be 1 or 2, got " << o.num_digits);
  ImageDataset ds = load_idx_dataset(data_dir, "mnist", split, /*pad_to=*/28);
  auto unit = ds.images.add(1.0).mul_(0.5);  // [M, 1, 28, 28] in [0, 1]
  digits_ = (o.digit_size == 28 ? unit : at::adaptive_avg_pool2d(unit, {o.digit_size, o.digit_size})).squeeze(1)
                .contiguous();
  labels_ = ds.labels;
}

int64_t MovingMnist::num_digits_in_split() const { return digits_.size(0); }

MovingMnistVideos MovingMnist::videos(int64_t index, int64_t n, int64_t frames, int64_t seed_offset) const {
  CL_CHECK(n >= 0 && frames >= 1 && index >= 0, "moving mnist: bad request (" << n << " videos of " << frames << " frames)");
  const int64_t C = o_.canvas, d = o_.digit_size, K = o_.num_digits, M = digits_.size(0);
  const double hi = double(C - d);
  MovingMnistVideos out;
  out.frames = at::zeros({n, frames, 1, C, C}, at::kFloat);
  out.labels = at::zeros({n, K}, at::kLong);
  out.positions = at::zeros({n, frames, K, 2}, at::kLong);
  auto pos = out.positions.accessor<int64_t, 4>();
  auto lab = out.labels.accessor<int64_t, 2>();
  const auto* digit_labels = labels_.data_ptr<int64_t>();
  for (int64_t i = 0; i < n; ++i) {
    std::mt19937_64 rng(mix(mix(uint64_t(o_.data_seed + seed_offset)) ^ uint64_t(index + i)));
    std::uniform_real_distribution<double> unit(0.0, 1.0);
    for (int64_t k = 0; k < K; ++k) {
      const int64_t which = int64_t(rng() % uint64_t(M));
      lab[i][k] = digit_labels[which];
      const double y0 = unit(rng) * hi, x0 = unit(rng) * hi, angle = unit(rng) * 2 * M_PI;
      const double vy = o_.speed * std::sin(angle), vx = o_.speed * std::cos(angle);
      const at::Tensor digit = digits_[which];
      for (int64_t f = 0; f < frames; ++f) {
        const int64_t y = std::llround(bounce(y0 + vy * double(f), hi)), x = std::llround(bounce(x0 + vx * double(f), hi));
        pos[i][f][k][0] = y;
        pos[i][f][k][1] = x;
        auto region = out.frames[i][f][0].narrow(0, y, d).narrow(1, x, d);
        region.copy_(at::maximum(region, digit));
      }
    }
  }
  out.frames.mul_(2.0).sub_(1.0);
  return out;
}

}  // namespace cachelab
