#include "tools/fid_command.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/error.h"
#include "framework/npz.h"
#include "metrics/functional.h"
#include "metrics/sample_quality.h"
#include "models/inception.h"

namespace cachelab {

int fid_command(const std::string& samples, const std::string& reference, const FidCommandOptions& o) {
  CL_CHECK(!o.inception.empty(),
           "cachelab fid needs --inception FILE: pytorch-fid's pt_inception-2015-12-05-6726825d.pth converted with "
           "`/usr/bin/python3 tools/convert_inception.py pt_inception-2015-12-05-6726825d.pth OUT.safetensors` "
           "(docs/full-size.md)");
  CL_CHECK(o.batch >= 1, "--batch must be >= 1");
  CL_CHECK(std::filesystem::is_regular_file(samples), "samples file `" << samples << "` not found");
  at::set_num_threads(std::max(1, o.threads));
  InceptionJudgeOptions jo;
  jo.weights = std::filesystem::absolute(o.inception).string();
  jo.batch = o.batch;
  InceptionJudge judge(jo);
  std::printf("fid: %s vs %s, pytorch-fid InceptionV3 %s (%s)\n", samples.c_str(), reference.c_str(), o.inception.c_str(),
              judge.identity().c_str());
  NpzReader(samples).open("arr_0");  // a bad samples file fails before the reference's minutes
  at::Tensor ref = reference_batch_features(reference, judge, o.batch), logits;
  at::Tensor gen = npz_features(samples, judge, o.batch, "samples", &logits);
  Eigen::VectorXd mu_g, mu_r;
  Eigen::MatrixXd s_g, s_r;
  feature_statistics(gen, &mu_g, &s_g);
  feature_statistics(ref, &mu_r, &s_r);
  const InceptionScore is = inception_score(logits);
  const PrecisionRecall pr = precision_recall(ref, gen, o.k);
  nlohmann::json j;
  j["samples"] = {{"file", samples}, {"n", gen.size(0)}};
  j["reference"] = {{"file", reference}, {"n", ref.size(0)}};
  j["inception"] = {{"file", o.inception}, {"digest", judge.identity()}};
  j["fid"] = frechet_distance(mu_g, s_g, mu_r, s_r);
  j["inception_score"] = is.mean;
  j["inception_score_std"] = is.std;
  j["inception_score_splits"] = is.splits;
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
