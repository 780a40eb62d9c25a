// lenet-mnist / lenet-fashion: a small LeNet trained here on MNIST / Fashion-MNIST. It judges
// class agreement of generated images and provides the features FID is computed on (the
// 84-wide penultimate layer). The weights file records the data set it was trained on.
#pragma once
#include <ATen/core/Tensor.h>

#include <memory>
#include <vector>
#include <string>

#include "framework/metric.h"

namespace cachelab {

struct LenetTrainOptions {
  int epochs = 10;
  int batch_size = 128;
  double lr = 1e-3;  // Adam
  int64_t seed = 0;
  int threads = 2;
  std::string dataset = "mnist";
  std::string output = "models/weights/lenet-mnist.safetensors";  // relative to the project root
  template <class V>
  void fields(V& v) {
    v("epochs", epochs, "passes over the 60k training images");
    v("batch_size", batch_size, "images per step");
    v("lr", lr, "Adam learning rate");
    v("seed", seed, "seed of init and data order");
    v("threads", threads, "intra-op threads");
    v("dataset", dataset, "mnist | fashion-mnist");
    v("output", output, "weights file (relative to the project root)");
  }
};

struct LenetJudgeOptions {
  std::string weights = "models/weights/lenet-mnist.safetensors";  // relative to the project root
  template <class V>
  void fields(V& v) {
    v("weights", weights, "LeNet weights (relative to the project root): lenet-mnist or lenet-fashion.safetensors");
  }
};

class Judge final : public Evaluator {
 public:
  Judge();  // random weights; call load()
  explicit Judge(const LenetJudgeOptions& o);  // loads o.weights
  ~Judge() override;
  // Errors name the file and the command that makes it.
  void load(const std::string& path);
  void save(const std::string& path, const std::string& note = "");  // records dataset()
  std::string dataset() const override { return dataset_; }
  at::Tensor logits(const at::Tensor& images) override;  // [N, 1, 32, 32] in [-1, 1] -> [N, 10]
  at::Tensor features(const at::Tensor& images) override;  // -> [N, 84]
  double accuracy(const at::Tensor& images, const at::Tensor& labels);  // fraction in [0, 1]
  // Agreement within each of the 10 classes (NaN for a class absent from `labels`).
  std::vector<double> class_accuracy(const at::Tensor& images, const at::Tensor& labels) override;
  struct Impl;

 private:
  friend double train_lenet(const LenetTrainOptions& options);
  std::unique_ptr<Impl> impl_;
  std::string dataset_;  // from the weights' metadata ("" for a random judge)
};

// Trains lenet-mnist, prints progress and test accuracy, writes the weights.
// Returns the test accuracy.
double train_lenet(const LenetTrainOptions& options);

}  // namespace cachelab
