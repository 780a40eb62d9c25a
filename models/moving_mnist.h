// Moving MNIST generated from MNIST (Srivastava et al. 2015's construction): digits bounce
// inside a square canvas, each with a constant speed and a direction drawn at random,
// reflected at the walls; overlapping digits combine by maximum. Every video is a pure
// function of (options, split, index), so the ground truth of every frame is known and a
// test video is rebuilt wherever it is needed (conditioning frames, metrics).
//
// Digits are MNIST's 28 x 28 images area-resized to digit_size (14 = 2 x 2 averages on a
// 32 x 32 canvas keeps the classic 64 / 28 proportions); the train split draws digits from
// MNIST's train split, the test split from its test split. Pixels in [-1, 1] (background -1).
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

namespace cachelab {

struct MovingMnistOptions {
  int canvas = 32;        // frame side, pixels
  int digit_size = 14;    // digit side after resizing, pixels
  int num_digits = 1;     // digits per video
  double speed = 2.0;     // pixels per frame
  int64_t data_seed = 0;  // seed of digit choice, start positions and directions

  template <class V>
  void fields(V& v) {
    v("canvas", canvas, "frame side in pixels");
    v("digit_size", digit_size, "digit side in pixels (MNIST's 28 x 28 area-resized)");
    v("num_digits", num_digits, "digits bouncing in each video (1 or 2)");
    v("speed", speed, "digit speed, pixels per frame");
    v("data_seed", data_seed, "seed of the videos (digits, start positions, directions)");
  }
  template <class C>
  void check(C& c) const {
    c.require(digit_size >= 4 && digit_size <= 28, "digit_size", "must be in [4, 28]");
    c.require(canvas >= digit_size, "canvas", "must be >= digit_size");
    c.require(num_digits >= 1 && num_digits <= 2, "num_digits", "must be 1 or 2");
    c.require(speed >= 0 && speed <= canvas, "speed", "must be in [0, canvas]");
  }
};

struct MovingMnistVideos {
  at::Tensor frames;     // [N, F, 1, canvas, canvas] float32 in [-1, 1]
  at::Tensor labels;     // [N, num_digits] int64, the digits' classes
  at::Tensor positions;  // [N, F, num_digits, 2] int64, each digit's top-left corner (row, column)
};

class MovingMnist {
 public:
  // Loads MNIST's `split` ("train" | "test") from <data_dir>/mnist/.
  MovingMnist(const MovingMnistOptions& o, const std::string& data_dir, const std::string& split);
  // Videos index .. index + n - 1 of the split, `frames` frames each; `seed_offset` is added
  // to data_seed (a sweep over seeds draws other videos).
  MovingMnistVideos videos(int64_t index, int64_t n, int64_t frames, int64_t seed_offset = 0) const;
  const MovingMnistOptions& options() const { return o_; }
  int64_t num_digits_in_split() const;

 private:
  MovingMnistOptions o_;
  at::Tensor digits_;  // [M, digit_size, digit_size] float32 in [0, 1]
  at::Tensor labels_;  // [M] int64
};

}  // namespace cachelab
