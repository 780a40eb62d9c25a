// `cachelab decode`: a run's saved latent samples through the SD VAE decoder into uint8
// images in an .npz (`arr_0`, NHWC), as DiT's sample_ddp.py writes them for the ADM evaluator.
#pragma once
#include <string>

namespace cachelab {
struct DecodeOptions {
  std::string vae;            // decoder weights (any of the three layouts of models/vae.h)
  std::string output;         // .npz path for one run file; a folder for a results folder
  bool reference = false;     // decode /samples/reference instead of /samples/x
  int batch = 8;
  int threads = 1;
};
// `input`: one run file, or a results folder (every done run's samples). Returns the exit code.
int decode_command(const std::string& input, const DecodeOptions& o);
}  // namespace cachelab
