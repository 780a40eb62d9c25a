#include "framework/scorer.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <filesystem>

#include "framework/decoder.h"
#include "framework/error.h"
#include "framework/experiment.h"
#include "framework/metric.h"
#include "framework/paths.h"
#include "framework/registries.h"

namespace cachelab {

Scorer::Scorer(const ConfigNode& judge_spec) : judge_spec_(judge_spec) {}
Scorer::~Scorer() = default;

Evaluator* Scorer::judge() {
  if (!judge_ && !judge_spec_.is_null()) judge_ = evaluators().build(judge_spec_);
  return judge_.get();
}

Decoder* Scorer::decoder(const ConfigNode& run_config) {
  const ConfigNode* d = run_config.find("decoder");
  if (!d) return nullptr;
  const std::string key = to_yaml(*d);
  auto it = decoders_.find(key);
  if (it == decoders_.end()) it = decoders_.emplace(key, decoders().build(*d)).first;
  return it->second.get();
}

void Scorer::prepare(const ConfigNode& run_config) {
  decoder(run_config);  // a bad VAE file fails here
  if (const ConfigNode* m = run_config.find("metrics"))
    for (auto& entry : m->seq) {
      auto metric = metrics().build(metric_spec(entry));
      for (auto& f : metric->files(default_data_dir()))
        CL_CHECK(std::filesystem::exists(f), entry.where() << ": metric `" << metric_spec(entry).find("type")->scalar
                                                           << "` reads `" << f << "`, which is missing: run `bash "
                                                              "tools/fetch_data.sh` or point CACHELAB_DATA at the data");
      if (metric->needs_judge()) judge();
    }
}

std::map<std::string, double> Scorer::score(const ConfigNode& run_config, const at::Tensor& samples,
                                            const at::Tensor& labels, const at::Tensor& truth,
                                            const std::string& reference_id,
                                            const at::Tensor& reference_samples) {
  MetricInputs in;
  in.samples = samples;
  in.reference = reference_samples;
  if (Decoder* dec = decoder(run_config)) {  // a latent model: the metrics see images
    c10::InferenceMode guard;
    in.samples = dec->decode(samples);
    const std::string key = reference_id + "|" + to_yaml(*run_config.find("decoder"));
    auto it = decoded_refs_.find(key);
    if (it == decoded_refs_.end()) it = decoded_refs_.emplace(key, dec->decode(reference_samples)).first;
    in.reference = it->second;
  }
  in.labels = labels;
  in.truth = truth;
  in.data_dir = default_data_dir();
  std::map<std::string, double> out;
  for (auto& entry : run_config.find("metrics") ? run_config.find("metrics")->seq : std::vector<ConfigNode>{}) {
    auto metric = metrics().build(metric_spec(entry));
    if (metric->needs_judge()) in.judge = judge();
    for (auto& [k, v] : metric->compute(in)) out[k] = v;
  }
  return out;
}

}  // namespace cachelab
