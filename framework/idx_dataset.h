// MNIST-format (IDX) datasets: MNIST and Fashion-MNIST, fetched by tools/fetch_data.sh.
#pragma once
#include <ATen/core/Tensor.h>

#include <string>

#include "framework/paths.h"

namespace cachelab {

struct ImageDataset {
  at::Tensor images;  // [N, 1, H, W] float32 in [-1, 1] (padded to `pad_to` when asked)
  at::Tensor labels;  // [N] int64
};

// name: "mnist" or "fashion-mnist"; split: "train" or "test". Looks in
// <data_dir>/<name>/; a missing file is an error that names the path and says to run
// `bash tools/fetch_data.sh`. pad_to > 28 pads symmetrically with the background (-1).
ImageDataset load_idx_dataset(const std::string& data_dir, const std::string& name, const std::string& split,
                              int pad_to = 32);

}  // namespace cachelab
