#include "metrics/sample_quality.h"

#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <map>
#include <mutex>

#include "framework/error.h"
#include "framework/npz.h"
#include "framework/paths.h"
#include "framework/safetensors.h"
#include "metrics/functional.h"

namespace cachelab {

at::Tensor npz_features(const std::string& path, Evaluator& judge, int batch, const std::string& label, at::Tensor* logits) {
  NpzReader npz(path);
  NpyInfo info = npz.open("arr_0");
  CL_CHECK(info.descr == "|u1" && info.shape.size() == 4,
           "`" << path << "`: arr_0 must be uint8 images [N, H, W, C] (as `cachelab decode` and ADM's evaluator write "
                  "them); it is "
               << info.descr << " " << shape_str(info.shape));
  const int64_t n = info.shape[0];
  CL_CHECK(n >= 2, "`" << path << "` holds " << n << " image(s); at least 2 are needed");
  std::vector<at::Tensor> feats, logs;
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  c10::InferenceMode guard;
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t b = std::min<int64_t>(batch, n - s);
    at::Tensor u = at::empty({b, info.shape[1], info.shape[2], info.shape[3]}, at::kByte);
    CL_CHECK(npz.read(u.data_ptr<uint8_t>(), size_t(u.numel())) == size_t(u.numel()), "`" << path << "` is truncated");
    // uint8 -> [-1, 1] as the samples are; a judge that quantizes them again gets u back.
    auto x = u.permute({0, 3, 1, 2}).to(at::kFloat).div(127.5).sub(1.0);
    feats.push_back(judge.features(x).to(at::kDouble));
    if (logits) logs.push_back(judge.logits(x));
    const auto now = std::chrono::steady_clock::now();
    if (s + b == n || std::chrono::duration<double>(now - last).count() > 20) {
      const double el = std::chrono::duration<double>(now - start).count();
      std::printf("  %s: %lld / %lld images, %.1f images/s, ~%.0f s left\n", label.c_str(), (long long)(s + b),
                  (long long)n, double(s + b) / el, el / double(s + b) * double(n - s - b));
      std::fflush(stdout);
      last = now;
    }
  }
  if (logits) *logits = at::cat(logs);
  return at::cat(feats);
}

at::Tensor reference_batch_features(const std::string& path, Evaluator& judge, int batch) {
  namespace fs = std::filesystem;
  CL_CHECK(fs::is_regular_file(path), "reference batch `" << path << "` not found");
  const std::string key = judge.identity() + ":" + std::to_string(fs::file_size(path)) + ":" +
                          std::to_string(static_cast<long long>(fs::last_write_time(path).time_since_epoch().count()));
  static std::map<std::string, at::Tensor> memo;
  static std::mutex mutex;
  std::lock_guard<std::mutex> lock(mutex);
  const std::string memo_key = path + "|" + key + "|" + std::to_string(reinterpret_cast<uintptr_t>(&judge));
  if (auto it = memo.find(memo_key); it != memo.end()) return it->second;
  const std::string cache = judge.identity().empty() ? "" : path + ".features-" + judge.identity() + ".safetensors";
  at::Tensor f;
  if (!cache.empty() && fs::exists(cache)) {
    try {
      SafetensorsFile c = read_safetensors(cache);
      if (c.metadata["key"] == key && !c.tensors.empty()) {
        f = c.tensors[0].second;
        std::printf("  reference batch: features from %s\n", cache.c_str());
      }
    } catch (const std::exception& e) {
      std::printf("  reference batch: ignoring the unreadable cache %s (%s)\n", cache.c_str(), e.what());
    }
  }
  if (!f.defined()) {
    f = npz_features(path, judge, batch, "reference batch");
    if (!cache.empty()) {
      try {
        write_safetensors(cache, {{"features", f}}, {{"key", key}, {"file", path}});
      } catch (const std::exception& e) {
        std::printf("  reference batch: features not cached (%s)\n", e.what());
      }
    }
  }
  return memo.emplace(memo_key, f).first->second;
}

std::vector<std::pair<std::string, double>> SampleQualityMetric::compute(const MetricInputs& in) {
  CL_CHECK(in.judge, "metric `sample_quality` needs a judge: set `judge:` in the experiment (e.g. {type: inception, "
                     "weights: ...})");
  Evaluator& judge = *in.judge;
  CL_CHECK(in.samples.size(0) > o_.k, "sample_quality needs more than k = " << o_.k << " samples");
  auto gen = judge.features(in.samples).to(at::kDouble);
  const InceptionScore is = inception_score(judge.logits(in.samples), o_.split_size);
  auto ref = judge.features(in.reference).to(at::kDouble);
  Eigen::VectorXd mu_g, mu_r;
  Eigen::MatrixXd s_g, s_r;
  feature_statistics(gen, &mu_g, &s_g);
  feature_statistics(ref, &mu_r, &s_r);
  std::vector<std::pair<std::string, double>> out = {{"fid_vs_reference", frechet_distance(mu_g, s_g, mu_r, s_r)},
                                                     {"inception_score", is.mean}};
  at::Tensor real = ref;
  if (!o_.reference_batch.empty()) {
    real = reference_batch_features(resolve_path(o_.reference_batch), judge);
    Eigen::VectorXd mu_b;
    Eigen::MatrixXd s_b;
    feature_statistics(real, &mu_b, &s_b);
    CL_CHECK(mu_b.size() == mu_g.size(), "sample_quality: the reference batch's features are " << mu_b.size()
                                                                                              << "-d, the samples' " << mu_g.size());
    out.emplace_back("fid_batch", frechet_distance(mu_g, s_g, mu_b, s_b));
  }
  const PrecisionRecall pr = precision_recall(real, gen, o_.k);
  out.emplace_back("precision", pr.precision);
  out.emplace_back("recall", pr.recall);
  return out;
}

std::vector<std::string> SampleQualityMetric::files(const std::string&) const {
  if (o_.reference_batch.empty()) return {};
  return {resolve_path(o_.reference_batch)};
}

}  // namespace cachelab
