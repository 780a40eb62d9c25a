// Scoring a finished run: the experiment's judge, the runs' decoders (latents -> images,
// each reference decoded once per decoder) and the registered metrics of its `metrics:`.
#pragma once
#include <ATen/core/Tensor.h>

#include <map>
#include <memory>
#include <string>

#include "framework/config.h"

namespace cachelab {

class Evaluator;
class Decoder;

class Scorer {
 public:
  explicit Scorer(const ConfigNode& judge_spec);  // null: no judge
  ~Scorer();
  // Builds what scoring `run_config` needs (its decoder, the judge) and checks the files its
  // metrics read, so that a bad file fails before anything runs.
  void prepare(const ConfigNode& run_config);
  // Every metric of `run_config` on the final samples against the reference's (decoded
  // first when the run has a decoder; `reference_id` keys the decoded reference).
  // `truth`: the data the samples should equal (Trajectory::truth), or undefined.
  std::map<std::string, double> score(const ConfigNode& run_config, const at::Tensor& samples, const at::Tensor& labels,
                                      const at::Tensor& truth, const std::string& reference_id,
                                      const at::Tensor& reference_samples);

 private:
  Evaluator* judge();
  Decoder* decoder(const ConfigNode& run_config);  // null without `decoder:`
  ConfigNode judge_spec_;
  std::unique_ptr<Evaluator> judge_;
  std::map<std::string, std::unique_ptr<Decoder>> decoders_;  // by resolved spec
  std::map<std::string, at::Tensor> decoded_refs_;            // by reference id and decoder
};

}  // namespace cachelab
