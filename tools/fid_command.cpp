#include "tools/fid_command.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/npz.h"
#include "framework/paths.h"
#include "metrics/functional.h"
#include "models/inception.h"
#include "models/safetensors.h"

namespace cachelab {
namespace {

struct Features {
  at::Tensor pool, logits;  // [N, 2048], [N, 1008]
  int64_t h = 0, w = 0;
};

// The pool features and logits of arr_0 (uint8 [N, H, W, 3]), read and scored in batches,
// with progress on stdout.
Features features_of(const std::string& path, const FidInception& net, int batch, const char* label) {
  NpzReader npz(path);
  NpyInfo info = npz.open("arr_0");
  CL_CHECK(info.descr == "|u1" && info.shape.size() == 4 && info.shape[3] == 3,
           "`" << path << "`: arr_0 must be uint8 images [N, H, W, 3] (as `cachelab decode` and ADM's evaluator "
                  "write them); it is "
               << info.descr << " " << shape_str(info.shape));
  const int64_t n = info.shape[0], h = info.shape[1], w = info.shape[2];
  CL_CHECK(n >= 2, "`" << path << "` holds " << n << " image(s); FID needs at least 2");
  Features f;
  f.h = h, f.w = w;
  std::vector<at::Tensor> pools, logits;
  const auto start = std::chrono::steady_clock::now();
  auto last = start;
  c10::InferenceMode guard;
  for (int64_t s = 0; s < n; s += batch) {
    const int64_t b = std::min<int64_t>(batch, n - s);
    at::Tensor u = at::empty({b, h, w, 3}, at::kByte);
    CL_CHECK(npz.read(u.data_ptr<uint8_t>(), size_t(u.numel())) == size_t(u.numel()), "`" << path << "` is truncated");
    auto out = net.forward(FidInception::from_uint8_nhwc(u));
    pools.push_back(out.pool.to(at::kDouble));
    logits.push_back(out.logits);
    const auto now = std::chrono::steady_clock::now();
    if (s + b == n || std::chrono::duration<double>(now - last).count() > 20) {
      const double el = std::chrono::duration<double>(now - start).count();
      std::printf("  %s: %lld / %lld images, %.1f images/s, ~%.0f s left\n", label, (long long)(s + b), (long long)n,
                  double(s + b) / el, el / double(s + b) * double(n - s - b));
      std::fflush(stdout);
      last = now;
    }
  }
  f.pool = at::cat(pools);
  f.logits = at::cat(logits);
  return f;
}

// The reference's features, cached beside it (or recomputed when the cache is for other
// weights or another version of the file): 10,000 images at 299 x 299 take minutes.
Features reference_features(const std::string& path, const std::string& weights_digest, const FidInception& net,
                            int batch) {
  const auto mtime = std::filesystem::last_write_time(path).time_since_epoch().count();
  const std::string key = weights_digest + ":" + std::to_string(std::filesystem::file_size(path)) + ":" +
                          std::to_string(static_cast<long long>(mtime));
  const std::string cache = path + ".inception-" + weights_digest + ".safetensors";
  if (std::filesystem::exists(cache)) {
    try {
      SafetensorsFile c = read_safetensors(cache);
      if (c.metadata["key"] == key) {
        std::map<std::string, at::Tensor> t(c.tensors.begin(), c.tensors.end());
        std::printf("  reference: features from %s\n", cache.c_str());
        return {t.at("pool"), t.at("logits"), std::stoll(c.metadata["h"]), std::stoll(c.metadata["w"])};
      }
    } catch (const std::exception& e) {
      std::printf("  reference: ignoring the unreadable cache %s (%s)\n", cache.c_str(), e.what());
    }
  }
  Features f = features_of(path, net, batch, "reference");
  try {
    write_safetensors(cache, {{"pool", f.pool}, {"logits", f.logits}},
                      {{"key", key}, {"h", std::to_string(f.h)}, {"w", std::to_string(f.w)}});
  } catch (const std::exception& e) {
    std::printf("  reference: features not cached (%s)\n", e.what());
  }
  return f;
}

}  // namespace

int fid_command(const std::string& samples, const std::string& reference, const FidCommandOptions& o) {
  CL_CHECK(!o.inception.empty(),
           "cachelab fid needs --inception FILE: pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted with "
           "`/usr/bin/python3 tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth OUT.safetensors` "
           "(docs/full-size.md)");
  CL_CHECK(o.batch >= 1, "--batch must be >= 1");
  at::set_num_threads(std::max(1, o.threads));
  FidInception net;
  net.load(o.inception);
  const std::string digest = file_digest(o.inception);
  std::printf("fid: %s vs %s, pytorch-fid InceptionV3 %s (%s)\n", samples.c_str(), reference.c_str(), o.inception.c_str(),
              digest.c_str());
  NpzReader(samples).open("arr_0");  // a bad samples file fails before the reference's minutes
  Features ref = reference_features(reference, digest, net, o.batch);
  Features gen = features_of(samples, net, o.batch, "samples");
  if (gen.h != ref.h || gen.w != ref.w)
    std::printf("  note: samples are %lldx%lld, the reference %lldx%lld (both are resized to 299x299)\n",
                (long long)gen.h, (long long)gen.w, (long long)ref.h, (long long)ref.w);
  Eigen::VectorXd mu_g, mu_r;
  Eigen::MatrixXd s_g, s_r;
  feature_statistics(gen.pool, &mu_g, &s_g);
  feature_statistics(ref.pool, &mu_r, &s_r);
  nlohmann::json j;
  j["samples"] = {{"file", samples}, {"n", gen.pool.size(0)}, {"height", gen.h}, {"width", gen.w}};
  j["reference"] = {{"file", reference}, {"n", ref.pool.size(0)}, {"height", ref.h}, {"width", ref.w}};
  j["inception"] = {{"file", o.inception}, {"digest", digest}};
  j["fid"] = frechet_distance(mu_g, s_g, mu_r, s_r);
  const InceptionScore is = inception_score(gen.logits);
  j["inception_score"] = is.mean;
  j["inception_score_std"] = is.std;
  j["inception_score_splits"] = is.splits;
  const PrecisionRecall pr = precision_recall(ref.pool, gen.pool, o.k);
  j["precision"] = pr.precision;
  j["recall"] = pr.recall;
  j["k"] = o.k;
  std::printf("  FID %.4f   Inception Score %.3f (+- %.3f over %d split(s) of <= 5000)   precision %.4f   recall %.4f (k = %d)\n",
              j["fid"].get<double>(), is.mean, is.std, is.splits, pr.precision, pr.recall, o.k);
  NpzReader rz(reference);
  if (rz.has("mu") && rz.has("sigma")) {
    std::vector<int64_t> ms, ss;
    auto mu = rz.read_doubles("mu", &ms);
    auto sigma = rz.read_doubles("sigma", &ss);
    const int64_t d = mu_g.size();
    if (ms == std::vector<int64_t>{d} && ss == std::vector<int64_t>{d, d}) {
      Eigen::VectorXd m = Eigen::Map<Eigen::VectorXd>(mu.data(), d);
      Eigen::MatrixXd s = Eigen::Map<Eigen::Matrix<double, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>>(sigma.data(), d, d);
      j["fid_vs_stored_statistics"] = frechet_distance(mu_g, s_g, m, s);
      std::printf("  FID against the reference file's stored mu / sigma (TensorFlow's Inception): %.4f\n",
                  j["fid_vs_stored_statistics"].get<double>());
    } else {
      std::printf("  note: the reference's stored mu / sigma are not %lld-d; not compared\n", (long long)d);
    }
  }
  if (!o.output.empty()) {
    std::ofstream(o.output) << j.dump(2) << "\n";
    std::printf("  wrote %s\n", o.output.c_str());
  }
  return 0;
}

}  // namespace cachelab
