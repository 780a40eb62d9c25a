#include "models/learn2pd.h"

#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Parallel.h>
#include <c10/core/GradMode.h>

#include <cmath>
#include <cstdio>
#include <filesystem>

#include "framework/backbone.h"
#include "framework/direct_driver.h"
#include "framework/error.h"
#include "framework/paths.h"
#include "framework/pipeline.h"
#include "framework/safetensors.h"
#include "models/lm_decoders.h"
#include "models/masked_lm.h"
#include "models/mdlm_pipeline.h"

namespace cachelab {
namespace {

constexpr const char* kFormat = "cachelab learn2pd filter 1";

// The baseline rule, recording what the filter will see at every step and what it predicts.
struct Record {
  at::Tensor features, tokens, masked;  // [B, 2N] float, [B, N] int64, [B, N] bool
};
class RecordingDecoder final : public LmDecoder {
 public:
  UnmaskChoice choose(const UnmaskStep& s) const override {
    records.push_back({learn2pd_features(s.logits, s.masked), greedy_confidence(s.logits).second, s.masked.clone()});
    return base_.choose(s);
  }
  mutable std::vector<Record> records;

 private:
  LowConfidenceDecoder base_{LowConfidenceOptions{}};
};


}  // namespace

at::Tensor learn2pd_features(const at::Tensor& logits, const at::Tensor& masked) {
  auto conf = greedy_confidence(logits).first.to(at::kFloat).cpu();
  auto m = masked.cpu();
  return at::cat({at::where(m, conf, at::ones_like(conf)), m.to(at::kFloat)}, 1);
}

at::Tensor Learn2pdFilter::logits(const at::Tensor& features) const {
  return at::linear(at::relu(at::linear(features, w1, b1)), w2, b2);
}

Learn2pdFilter Learn2pdFilter::load(const std::string& path) {
  const std::string hint = "train it with `cachelab train configs/train/learn2pd-llada-tasks.yaml` (model: learn2pd)";
  CL_CHECK(!path.empty(), "learn2pd: no filter file given; " << hint);
  const std::string full = resolve_path(path);
  CL_CHECK(std::filesystem::exists(full), "learn2pd: filter file `" << path << "` not found (looked at " << full << "); " << hint);
  auto f = read_safetensors(full);
  auto fmt = f.metadata.find("format");
  CL_CHECK(fmt != f.metadata.end() && fmt->second == kFormat,
           "learn2pd: `" << path << "` is not a Learn2PD filter file (format `" << kFormat << "`); " << hint);
  Learn2pdFilter flt;
  for (auto& [name, t] : f.tensors) {
    if (name == "w1") flt.w1 = t.to(at::kFloat);
    else if (name == "b1") flt.b1 = t.to(at::kFloat);
    else if (name == "w2") flt.w2 = t.to(at::kFloat);
    else if (name == "b2") flt.b2 = t.to(at::kFloat);
  }
  CL_CHECK(flt.w1.defined() && flt.b1.defined() && flt.w2.defined() && flt.b2.defined() && flt.w1.dim() == 2 &&
               flt.w2.dim() == 2 && flt.w1.size(1) == 2 * flt.w2.size(0) && flt.w2.size(1) == flt.w1.size(0),
           "learn2pd: `" << path << "` lacks w1 [H, 2N], b1 [H], w2 [N, H], b2 [N]");
  return flt;
}

Learn2pdDecoder::Learn2pdDecoder(const Learn2pdOptions& o) : o_(o), filter_(Learn2pdFilter::load(o.filter)) {
  CL_CHECK(o.threshold > 0 && o.threshold < 1, "learn2pd: threshold must be in (0, 1) (got " << o.threshold << ")");
}

UnmaskChoice Learn2pdDecoder::choose(const UnmaskStep& s) const {
  const int64_t N = s.masked.size(1);
  CL_CHECK(N == filter_.block_length(), "learn2pd: the filter `" << o_.filter << "` was trained for blocks of "
                                                                 << filter_.block_length() << " positions; this decoding has "
                                                                 << N << " (set pipeline.block_length, or train a filter for it)");
  auto [conf, tokens] = greedy_confidence(s.logits);
  auto masked = s.masked.cpu();
  auto trust = at::sigmoid(filter_.logits(learn2pd_features(s.logits, masked))).ge(o_.threshold) & masked;
  // Always the most confident masked position, so every step commits.
  auto score = at::where(masked, conf.cpu(), at::full_like(conf.cpu(), -1.0));
  auto top = at::zeros_like(masked).scatter(1, score.argmax(1, true), true) & masked;
  return {(trust | top).to(s.masked.device()), tokens};
}

void train_learn2pd(Backbone& bb, const Learn2pdTrainOptions& o, const std::string& config_yaml, const std::string& digest) {
  const auto* lm = dynamic_cast<const MaskedLm*>(&bb);
  CL_CHECK(lm, "learn2pd: the filter is trained on a masked-diffusion LM backbone (llada, tiny_mdlm)");
  at::set_num_threads(o.threads);
  const LmTaskSet set(o.task);
  const int64_t N = o.block_length;
  std::vector<at::Tensor> feats, labels, masks;
  {
    c10::NoGradGuard no_grad;
    for (const auto& task : set.tasks) {
      MdlmPipelineOptions po;
      po.task = o.task;
      po.task.task = task.name();
      po.gen_length = int((task.gen_length() + N - 1) / N * N);
      po.block_length = int(N);
      po.steps_per_block = int(N);  // one token per step: the baseline the filter learns to run ahead of
      auto recorder = std::make_shared<RecordingDecoder>();
      const MdlmPipeline pipeline(po, recorder);
      int64_t rows = 0, right = 0;
      for (int64_t start = 0; start < o.problems; start += o.batch) {
        const int64_t n = std::min<int64_t>(o.batch, o.problems - start);
        Cond cond;
        cond.tokens = task.encode_prompts(task.problems(false, (uint64_t(o.seed) << 40) + uint64_t(start), n));
        DirectDriver driver(bb, uint64_t(o.seed) * 7919 + uint64_t(start));
        PipelineInputs in;
        in.backbone = &bb;
        in.cond = cond;
        in.batch = n;
        recorder->records.clear();
        at::Tensor x = pipeline.run(in, driver);
        CL_CHECK(x.defined(), "learn2pd: the LM's decoding went non-finite on task " << task.name());
        const int64_t P = cond.tokens.size(1);
        for (size_t k = 0; k < recorder->records.size(); ++k) {  // step k belongs to block k / N
          const Record& r = recorder->records[k];
          auto final_tokens = x.narrow(1, P + int64_t(k) / N * N, N).cpu();
          auto label = r.tokens.cpu().eq(final_tokens);
          feats.push_back(r.features);
          labels.push_back(label.to(at::kFloat));
          masks.push_back(r.masked.cpu());
          rows += r.masked.sum().item<int64_t>();
          right += (label & r.masked.cpu()).sum().item<int64_t>();
        }
      }
      std::printf("[learn2pd] %s: %d problems, %lld (step, masked position) pairs, %.1f%% already final\n",
                  task.name().c_str(), o.problems, (long long)rows, 100.0 * double(right) / double(std::max<int64_t>(1, rows)));
      std::fflush(stdout);
    }
  }
  auto X = at::cat(feats), Y = at::cat(labels), M = at::cat(masks).to(at::kFloat);
  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed) + 1);
  auto perm = at::randperm(X.size(0), gen);
  const int64_t hold = std::max<int64_t>(1, X.size(0) / 10), fit = X.size(0) - hold;
  CL_CHECK(fit >= 1, "learn2pd: too little data to fit the filter: raise `problems`");
  auto tr = perm.narrow(0, 0, fit), te = perm.narrow(0, fit, hold);
  const int64_t H = o.hidden;
  std::vector<at::Tensor> params = {at::randn({H, 2 * N}, gen) * std::sqrt(2.0 / double(2 * N)), at::zeros({H}),
                                    at::randn({N, H}, gen) * std::sqrt(1.0 / double(H)), at::zeros({N})};
  for (auto& p : params) p.set_requires_grad(true);
  std::vector<at::Tensor> m1, m2;
  for (auto& p : params) m1.push_back(at::zeros_like(p)), m2.push_back(at::zeros_like(p));
  auto loss_of = [&](const at::Tensor& idx) {
    auto z = at::linear(at::relu(at::linear(X.index_select(0, idx), params[0], params[1])), params[2], params[3]);
    auto w = M.index_select(0, idx);
    return (at::binary_cross_entropy_with_logits(z, Y.index_select(0, idx), {}, {}, at::Reduction::None) * w).sum() /
           w.sum().clamp_min(1);
  };
  const double b1 = 0.9, b2 = 0.999;
  for (int it = 1; it <= o.iterations; ++it) {
    for (auto& p : params)
      if (p.grad().defined()) p.grad().zero_();
    auto loss = loss_of(tr);
    loss.backward();
    c10::NoGradGuard no_grad;
    for (size_t i = 0; i < params.size(); ++i) {
      auto g = params[i].grad();
      m1[i].mul_(b1).add_(g, 1 - b1);
      m2[i].mul_(b2).addcmul_(g, g, 1 - b2);
      auto step = m1[i] / (1 - std::pow(b1, it)) / ((m2[i] / (1 - std::pow(b2, it))).sqrt() + 1e-8);
      params[i].sub_(step * o.lr);
    }
    if (it % std::max(1, o.iterations / 10) == 0 || it == o.iterations) {
      std::printf("[learn2pd] iteration %d: loss %.4f (held out %.4f)\n", it, loss.item<double>(), loss_of(te).item<double>());
      std::fflush(stdout);
    }
  }
  c10::NoGradGuard no_grad;
  Learn2pdFilter flt{params[0].detach(), params[1].detach(), params[2].detach(), params[3].detach()};
  // Held out: of the masked positions the filter trusts at 0.5, how many are final (its precision), and how many of the final ones it trusts.
  auto p = at::sigmoid(flt.logits(X.index_select(0, te))).ge(0.5) & M.index_select(0, te).gt(0);
  auto y = Y.index_select(0, te).gt(0) & M.index_select(0, te).gt(0);
  const double trusted = p.sum().item<double>(), correct = (p & y).sum().item<double>(), final_n = y.sum().item<double>();
  std::printf("[learn2pd] held out (%lld steps): precision %.4f (%g trusted), recall %.4f (%g final)\n", (long long)hold,
              correct / std::max(1.0, trusted), trusted, correct / std::max(1.0, final_n), final_n);
  write_safetensors(resolve_path(o.output), {{"w1", flt.w1}, {"b1", flt.b1}, {"w2", flt.w2}, {"b2", flt.b2}},
                    {{"format", kFormat}, {"block_length", std::to_string(N)}, {"backbone_digest", digest}, {"config_yaml", config_yaml}});
  std::printf("[learn2pd] wrote %s\n", o.output.c_str());
}

}  // namespace cachelab
