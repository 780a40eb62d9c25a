#include "models/lenet.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>

#include "framework/error.h"
#include "framework/safetensors.h"
#include "framework/idx_dataset.h"

namespace cachelab {

constexpr int kFeatureWidth = 84;
constexpr int64_t kEvalBatch = 1000;

struct Judge::Impl : torch::nn::Module {
  Impl() {
    conv1 = register_module("conv1", torch::nn::Conv2d(torch::nn::Conv2dOptions(1, 6, 5)));     // 32 -> 28 -> 14
    conv2 = register_module("conv2", torch::nn::Conv2d(torch::nn::Conv2dOptions(6, 16, 5)));    // 14 -> 10 -> 5
    fc1 = register_module("fc1", torch::nn::Linear(16 * 5 * 5, 120));
    fc2 = register_module("fc2", torch::nn::Linear(120, kFeatureWidth));
    fc3 = register_module("fc3", torch::nn::Linear(kFeatureWidth, 10));
  }
  at::Tensor features(const at::Tensor& x) {
    auto h = at::max_pool2d(at::relu(conv1(x)), 2);
    h = at::max_pool2d(at::relu(conv2(h)), 2).flatten(1);
    return at::relu(fc2(at::relu(fc1(h))));
  }
  at::Tensor forward(const at::Tensor& x) { return fc3(features(x)); }
  std::vector<std::pair<std::string, at::Tensor>> tensors() {
    std::vector<std::pair<std::string, at::Tensor>> out;
    for (auto& kv : named_parameters()) out.emplace_back(kv.key(), kv.value());
    return out;
  }
  torch::nn::Conv2d conv1{nullptr}, conv2{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr}, fc3{nullptr};
};

Judge::Judge() : impl_(std::make_unique<Impl>()) {}
Judge::Judge(const LenetJudgeOptions& o) : Judge() { load(resolve_path(o.weights)); }
Judge::~Judge() = default;

void Judge::load(const std::string& path) {
  load_into(impl_->tensors(), path,
            "cachelab train configs/train/lenet-mnist.yaml (configs/train/lenet-fashion.yaml for Fashion-MNIST)");
  // Files from before the data set was recorded are lenet-mnist's.
  const auto meta = read_safetensors(path).metadata;
  auto it = meta.find("dataset");
  dataset_ = it != meta.end() ? it->second : meta.count("model") && meta.at("model") == "lenet-mnist" ? "mnist" : "";
}

void Judge::save(const std::string& path, const std::string& note) {
  const std::string model = dataset_ == "fashion-mnist" ? "lenet-fashion" : dataset_.empty() ? "lenet" : "lenet-" + dataset_;
  write_safetensors(path, impl_->tensors(), {{"model", model}, {"dataset", dataset_}, {"note", note}});
}

namespace {
template <class F>
at::Tensor batched(const at::Tensor& x, F&& f) {
  c10::InferenceMode guard;
  std::vector<at::Tensor> outs;
  for (int64_t i = 0; i < x.size(0); i += kEvalBatch) outs.push_back(f(x.narrow(0, i, std::min(kEvalBatch, x.size(0) - i))));
  return at::cat(outs);
}
}  // namespace

at::Tensor Judge::logits(const at::Tensor& x) {
  return batched(x, [&](const at::Tensor& b) { return impl_->forward(b); });
}
at::Tensor Judge::features(const at::Tensor& x) {
  return batched(x, [&](const at::Tensor& b) { return impl_->features(b); });
}
double Judge::accuracy(const at::Tensor& x, const at::Tensor& labels) {
  return logits(x).argmax(1).eq(labels).to(at::kDouble).mean().item<double>();
}

std::vector<double> Judge::class_accuracy(const at::Tensor& x, const at::Tensor& labels) {
  auto hit = logits(x).argmax(1).eq(labels).to(at::kDouble);
  std::vector<double> out;
  for (int64_t c = 0; c < 10; ++c) {
    auto in_class = labels.eq(c);
    const int64_t n = in_class.sum().item<int64_t>();
    out.push_back(n ? hit.masked_select(in_class).mean().item<double>() : std::nan(""));
  }
  return out;
}

double train_lenet(const LenetTrainOptions& o) {
  at::set_num_threads(o.threads);
  torch::manual_seed(o.seed);
  auto train = load_idx_dataset(default_data_dir(), o.dataset, "train", 32);
  auto test = load_idx_dataset(default_data_dir(), o.dataset, "test", 32);
  Judge judge;
  judge.dataset_ = o.dataset;
  auto& net = *judge.impl_;
  torch::optim::Adam opt(net.parameters(), torch::optim::AdamOptions(o.lr));
  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed));
  const int64_t n = train.images.size(0);
  const auto t0 = std::chrono::steady_clock::now();
  for (int epoch = 0; epoch < o.epochs; ++epoch) {
    auto perm = at::randperm(n, gen);
    double loss_sum = 0;
    int steps = 0;
    for (int64_t i = 0; i + o.batch_size <= n; i += o.batch_size) {
      auto idx = perm.narrow(0, i, o.batch_size);
      opt.zero_grad();
      auto loss = at::cross_entropy_loss(net.forward(train.images.index_select(0, idx)),
                                         train.labels.index_select(0, idx));
      loss.backward();
      opt.step();
      loss_sum += loss.item<double>();
      ++steps;
    }
    const double el = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::printf("[lenet] epoch %d/%d  loss %.4f  test accuracy %.4f  %.0fs\n", epoch + 1, o.epochs, loss_sum / steps,
                judge.accuracy(test.images, test.labels), el);
    std::fflush(stdout);
  }
  const double acc = judge.accuracy(test.images, test.labels);
  const std::string out = resolve_path(o.output);
  judge.save(out, "test_accuracy=" + std::to_string(acc));
  std::printf("[lenet] test accuracy %.4f; weights in %s\n", acc, out.c_str());
  return acc;
}

}  // namespace cachelab
