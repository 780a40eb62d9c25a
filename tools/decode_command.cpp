#include "tools/decode_command.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <hdf5.h>

#include <cstdio>
#include <filesystem>
#include <memory>
#include <vector>

#include "framework/error.h"
#include "framework/npz.h"
#include "framework/recorder.h"
#include "framework/safetensors.h"
#include "models/vae.h"

namespace cachelab {
namespace {

// /samples/x (or /samples/reference) of a run file: float32 [N, C, H, W].
at::Tensor read_samples(const std::string& path, bool reference) {
  const std::string name = reference ? "/samples/reference" : "/samples/x";
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
  CL_CHECK(f >= 0, "cannot open run file `" << path << "`");
  hid_t ds = H5Lexists(f, "/samples", H5P_DEFAULT) > 0 && H5Lexists(f, name.c_str(), H5P_DEFAULT) > 0
                 ? H5Dopen2(f, name.c_str(), H5P_DEFAULT)
                 : -1;
  if (ds < 0) {
    H5Fclose(f);
    CL_FAIL("run file `" << path << "` has no " << name << " (runs save their first run.save_samples samples)");
  }
  hid_t space = H5Dget_space(ds);
  std::vector<hsize_t> dims(size_t(H5Sget_simple_extent_ndims(space)));
  H5Sget_simple_extent_dims(space, dims.data(), nullptr);
  std::vector<int64_t> shape(dims.begin(), dims.end());
  at::Tensor x = at::empty(shape, at::kFloat);
  herr_t rc = x.numel() ? H5Dread(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, x.data_ptr<float>()) : 0;
  H5Sclose(space), H5Dclose(ds), H5Fclose(f);
  CL_CHECK(rc >= 0, "cannot read " << name << " of `" << path << "`");
  CL_CHECK(x.dim() == 4 && x.size(1) == 4, "run file `" << path << "`: " << name << " has shape " << x.sizes()
                                                        << ", not latents [N, 4, h, w] (an image model's run?)");
  return x;
}

void decode_file(const std::string& run, const std::string& out, const SdVaeDecoder& vae, const DecodeOptions& o) {
  at::Tensor z = read_samples(run, o.reference);
  const int64_t n = z.size(0);
  c10::InferenceMode guard;
  std::unique_ptr<NpzWriter> npz;  // opened once the first batch gives the image size
  int64_t h = 0, w = 0;
  for (int64_t s = 0; s < n; s += o.batch) {
    at::Tensor u = to_uint8_nhwc(vae.decode(z.narrow(0, s, std::min<int64_t>(o.batch, n - s))));
    if (!npz) {
      h = u.size(1), w = u.size(2);
      npz = std::make_unique<NpzWriter>(out, "arr_0", std::vector<int64_t>{n, h, w, u.size(3)});
    }
    npz->write(u.data_ptr<uint8_t>(), size_t(u.numel()));
    std::printf("  %s: %lld / %lld decoded\n", std::filesystem::path(run).filename().c_str(),
                (long long)std::min<int64_t>(s + o.batch, n), (long long)n);
  }
  CL_CHECK(npz, "run file `" << run << "` saved no samples");
  npz->close();
  std::printf("decode: %s -> %s (%lld images %lldx%lld, uint8 NHWC as arr_0)\n", run.c_str(), out.c_str(),
              (long long)n, (long long)h, (long long)w);
}

}  // namespace

int decode_command(const std::string& input, const DecodeOptions& o) {
  CL_CHECK(!o.vae.empty(), "cachelab decode needs --vae FILE (the SD VAE's diffusion_pytorch_model.safetensors, "
                           "or an SD checkpoint converted to safetensors; docs/full-size.md)");
  CL_CHECK(std::filesystem::exists(input), "`" << input << "` does not exist (a run file or a results folder)");
  CL_CHECK(o.batch >= 1, "--batch must be >= 1");
  at::set_num_threads(std::max(1, o.threads));
  const SafetensorsFile weights = read_safetensors(o.vae);
  const SdVaeOptions shape = sd_vae_options_of(weights, o.vae);
  SdVaeDecoder vae(shape);
  std::printf("decode: VAE %s (%s layout, width %d, %zu resolutions)\n", o.vae.c_str(), vae.load(weights, o.vae).c_str(),
              shape.ch, shape.ch_mult.size());
  if (!std::filesystem::is_directory(input)) {
    decode_file(input, o.output.empty() ? std::filesystem::path(input).replace_extension(".npz").string() : o.output,
                vae, o);
    return 0;
  }
  const std::string dir = o.output.empty() ? (std::filesystem::path(input) / "npz").string() : o.output;
  int done = 0;
  for (auto& e : std::filesystem::directory_iterator(input)) {
    if (e.path().extension() != ".h5" || e.path().filename().string()[0] == '.') continue;
    auto info = read_run_info(e.path().string());
    if (!info || info->status != "done" || (info->is_reference && !o.reference)) continue;
    decode_file(e.path().string(), dir + "/" + info->run_id + ".npz", vae, o);
    ++done;
  }
  CL_CHECK(done > 0, "no done run with saved samples in `" << input << "`");
  return 0;
}

}  // namespace cachelab
