#include "framework/idx_dataset.h"

#include <ATen/ATen.h>

#include <cstdlib>
#include <fstream>
#include <vector>

#include "framework/error.h"

namespace cachelab {
namespace {

uint32_t read_be32(std::istream& in) {
  unsigned char b[4];
  in.read(reinterpret_cast<char*>(b), 4);
  return (uint32_t(b[0]) << 24) | (uint32_t(b[1]) << 16) | (uint32_t(b[2]) << 8) | uint32_t(b[3]);
}

std::vector<unsigned char> read_idx(const std::string& path, uint32_t magic, std::vector<int64_t>* dims) {
  std::ifstream in(path, std::ios::binary);
  CL_CHECK(in.good(), "dataset file `" << path << "` not found; run `bash tools/fetch_data.sh` "
                                       "(or `bash tools/setup.sh`) to fetch MNIST and Fashion-MNIST");
  uint32_t m = read_be32(in);
  CL_CHECK(m == magic, "`" << path << "` is not an IDX file of the expected kind (magic " << m << ", expected "
                           << magic << "); delete it and run `bash tools/fetch_data.sh`");
  int ndim = int(magic & 0xff);
  int64_t count = 1;
  for (int i = 0; i < ndim; ++i) {
    dims->push_back(read_be32(in));
    count *= dims->back();
  }
  std::vector<unsigned char> data(static_cast<size_t>(count));
  in.read(reinterpret_cast<char*>(data.data()), count);
  CL_CHECK(in.gcount() == count, "`" << path << "` is truncated (" << in.gcount() << " of " << count
                                     << " bytes); delete it and run `bash tools/fetch_data.sh`");
  return data;
}

}  // namespace

ImageDataset load_idx_dataset(const std::string& data_dir, const std::string& name, const std::string& split,
                              int pad_to) {
  CL_CHECK(name == "mnist" || name == "fashion-mnist",
           "unknown dataset `" << name << "`; known: mnist, fashion-mnist");
  CL_CHECK(split == "train" || split == "test", "unknown split `" << split << "`; known: train, test");
  const std::string prefix = data_dir + "/" + name + "/" + (split == "train" ? "train" : "t10k");
  std::vector<int64_t> idims, ldims;
  auto pixels = read_idx(prefix + "-images-idx3-ubyte", 0x00000803, &idims);
  auto labels = read_idx(prefix + "-labels-idx1-ubyte", 0x00000801, &ldims);
  CL_CHECK(idims[0] == ldims[0], "image and label counts differ in " << prefix);
  ImageDataset ds;
  auto u8 = at::from_blob(pixels.data(), {idims[0], 1, idims[1], idims[2]}, at::kByte);
  ds.images = u8.to(at::kFloat).div_(127.5).sub_(1.0);
  if (pad_to > idims[1]) {
    int64_t lo = (pad_to - idims[1]) / 2, hi = pad_to - idims[1] - lo;
    ds.images = at::constant_pad_nd(ds.images, {lo, hi, lo, hi}, -1.0);
  }
  ds.labels = at::from_blob(labels.data(), {ldims[0]}, at::kByte).to(at::kLong);
  return ds;
}

}  // namespace cachelab
