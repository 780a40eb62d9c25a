#include "caches/harmonica_train.h"

#include <torch/torch.h>

#include <cmath>

#include "framework/error.h"
#include "framework/pipeline.h"
#include "framework/sampler.h"

namespace cachelab {

namespace {

constexpr double kWeightFloor = 1e-3;  // relative to the mean weight 1: keeps every weight positive
constexpr double kBeta1 = 0.9, kBeta2 = 0.999, kAdamEps = 1e-8;

// The same noise for every proxy and evaluation (comparable across refreshes).
constexpr uint64_t kProxySeed = 43, kEvalSeed = 47, kUnrollSeed = 41;

at::Generator seeded(int64_t seed, uint64_t salt) {
  return at::detail::createCPUGenerator(uint64_t(seed) * 1000003ull + salt);
}

// `t` repeated n times along dim 0.
at::Tensor tile(const at::Tensor& t, int64_t n) {
  if (!t.defined() || n == 1) return t;
  std::vector<int64_t> reps(size_t(t.dim()), 1);
  reps[0] = n;
  return t.repeat(reps);
}

L2cOptions router_options(const L2cTrainOptions& o) {
  L2cOptions ro;
  ro.router = "(being trained)";
  ro.threshold = o.threshold;
  ro.full_every = o.full_every;
  return ro;
}

}  // namespace

HarmonicaTrainer::HarmonicaTrainer(Backbone& bb, const Sampler& sampler, const Guidance& guidance, L2cPairs pairs,
                                   int64_t train_count, const L2cTrainOptions& o)
    : bb_(bb),
      sampler_(sampler),
      guidance_(guidance),
      base_(bb, guidance, std::move(pairs), train_count, o),
      o_(o),
      gen_(seeded(o.seed, kUnrollSeed)) {
  steps_ = base_.pairs().steps();
  CL_CHECK(sampler_.num_steps() == steps_, "harmonica training: the sampler takes " << sampler_.num_steps()
                                                                                    << " steps, the trajectories "
                                                                                    << steps_);
  CL_CHECK(o_.teacher == "input" || !sampler_.needs_noise(),
           "harmonica training: teacher `trajectory` needs a deterministic sampler (an unroll's noise is not the "
           "trajectory's); use teacher: input");
  CL_CHECK(o_.proxy_samples <= train_count, "harmonica training: proxy_samples " << o_.proxy_samples << " > "
                                                                                 << train_count
                                                                                 << " training trajectories");
  routed_.assign(size_t(steps_), false);
  for (int64_t i : base_.routed_steps()) routed_[size_t(i)] = true;
  const L2cOptions ro = router_options(o_);
  unroll_router_ = std::make_unique<L2cRouter>(base_.logits(), ro);
  scratch_router_ = std::make_unique<L2cRouter>(base_.logits(), ro);
  unroll_hooks_ = std::make_unique<LayerHooks>(bb_, std::vector<SiteLayer*>{unroll_router_.get()});
  scratch_hooks_ = std::make_unique<LayerHooks>(bb_, std::vector<SiteLayer*>{scratch_router_.get()});
  plain_ = std::make_unique<PassThroughHooks>(bb_.linears());
  m_ = at::zeros_like(base_.logits().detach());
  v_ = at::zeros_like(m_);
  count_.assign(size_t(steps_), 0);
  weights_ = at::zeros({steps_}, at::kDouble);
  for (int64_t i : base_.routed_steps()) weights_[i] = 1.0;
}

HarmonicaTrainer::~HarmonicaTrainer() = default;

at::Tensor HarmonicaTrainer::guided(Hooks& hooks, const at::Tensor& x, int step, const at::Tensor& labels) {
  Cond cond;
  cond.labels = labels;
  const auto t = at::full({x.size(0)}, double(sampler_.timesteps()[size_t(step)]), at::kFloat);
  return guidance_.eval(bb_, x, t, cond, o_.cfg_scale, hooks);
}

StepIndex HarmonicaTrainer::step_index(int step) const {
  return {step, steps_, 0, step, steps_, sampler_.timesteps()[size_t(step)]};
}

at::Tensor HarmonicaTrainer::noise_like(const at::Tensor& x, at::Generator& gen) const {
  return sampler_.needs_noise() ? at::randn(x.sizes(), gen) : at::Tensor();
}

at::Tensor HarmonicaTrainer::teacher(const at::Tensor& x, int step, const at::Tensor& traj, const at::Tensor& labels) {
  torch::NoGradGuard no_grad;
  if (o_.teacher == "trajectory") return base_.pairs().target[step].index_select(0, traj);
  return guided(*plain_, x, step, labels);
}

void HarmonicaTrainer::start_unroll() {
  traj_ = at::randint(base_.train_count(), {o_.batch_size}, gen_, at::kLong);
  x_ = base_.pairs().x[0].index_select(0, traj_);
  labels_ = base_.pairs().labels.index_select(0, traj_);
  unroll_hooks_->begin_run(steps_);
  next_ = 0;
}

void HarmonicaTrainer::adam_row(int step) {
  torch::NoGradGuard no_grad;
  at::Tensor& logits = base_.logits();
  const auto g = logits.grad()[step];
  auto m = m_[step], v = v_[step], p = logits[step];
  m.mul_(kBeta1).add_(g, 1 - kBeta1);
  v.mul_(kBeta2).addcmul_(g, g, 1 - kBeta2);
  const int n = ++count_[size_t(step)];
  const double c1 = 1 - std::pow(kBeta1, n), c2 = 1 - std::pow(kBeta2, n);
  p.sub_(m / c1 / ((v / c2).sqrt() + kAdamEps) * o_.lr);
  p.clamp_(-o_.clamp, o_.clamp);
}

HarmonicaTrainer::Loss HarmonicaTrainer::iterate() {
  if (o_.refresh_every > 0 && iteration_ % o_.refresh_every == 0) {
    refresh_weights();
    refreshes_.push_back(iteration_ + 1);
  }
  ++iteration_;
  if (!x_.defined() || next_ > base_.routed_steps().back()) start_unroll();
  for (; !routed_[size_t(next_)]; ++next_) {  // full steps: every sub-layer computed and cached
    torch::NoGradGuard no_grad;
    unroll_router_->set_mode(L2cRouter::Mode::Fill);
    unroll_hooks_->begin_step(step_index(next_));
    const auto out = guided(*unroll_hooks_, x_, next_, labels_);
    x_ = sampler_.step(next_, x_, out, noise_like(x_, gen_));
  }
  const int i = next_;
  const auto target = teacher(x_, i, traj_, labels_);
  at::Tensor& logits = base_.logits();
  if (logits.grad().defined()) logits.mutable_grad().zero_();
  unroll_router_->set_mode(L2cRouter::Mode::Unroll);
  unroll_hooks_->begin_step(step_index(i));
  const auto pred = guided(*unroll_hooks_, x_, i, labels_);
  const auto mse = (pred - target).pow(2).mean();
  const auto reg = logits[i].sigmoid().mean();
  const auto loss = weights_[i].item<double>() * mse + o_.lambda * reg;
  loss.backward();
  const Loss l{loss.item<double>(), mse.item<double>(), reg.item<double>()};
  CL_CHECK(std::isfinite(l.total), "harmonica training diverged at step " << i << " (loss " << l.total
                                                                          << "); lower train.lr");
  adam_row(i);
  {
    torch::NoGradGuard no_grad;
    x_ = sampler_.step(i, x_, pred.detach(), noise_like(x_, gen_));
  }
  unroll_router_->set_mode(L2cRouter::Mode::Infer);
  ++next_;
  last_step_ = i;
  return l;
}

at::Tensor HarmonicaTrainer::image_error_proxy() {
  torch::NoGradGuard no_grad;
  const int64_t P = o_.proxy_samples;
  auto gen = seeded(o_.seed, kProxySeed);
  at::Tensor x = base_.pairs().x[0].narrow(0, 0, P);
  const at::Tensor labels = base_.pairs().labels.narrow(0, 0, P);
  at::Tensor branches;  // [k * P, ...]: from each routed step so far, computed in full from there
  std::vector<int> from;
  scratch_hooks_->begin_run(steps_);
  for (int k = 0; k < steps_; ++k) {
    const auto noise = noise_like(x, gen);
    if (routed_[size_t(k)]) {
      branches = branches.defined() ? at::cat({branches, x}) : x;
      from.push_back(k);
    }
    if (branches.defined()) {
      const int64_t nb = int64_t(from.size());
      const auto out = guided(*plain_, branches, k, tile(labels, nb));
      branches = sampler_.step(k, branches, out, tile(noise, nb));
    }
    scratch_router_->set_mode(routed_[size_t(k)] ? L2cRouter::Mode::Unroll : L2cRouter::Mode::Fill);
    scratch_hooks_->begin_step(step_index(k));
    x = sampler_.step(k, x, guided(*scratch_hooks_, x, k, labels), noise);
  }
  scratch_router_->set_mode(L2cRouter::Mode::Infer);
  auto lambda = at::zeros({steps_}, at::kDouble);
  for (size_t j = 0; j < from.size(); ++j) {
    const auto mine = branches.narrow(0, int64_t(j) * P, P);
    const auto after = j + 1 < from.size() ? branches.narrow(0, int64_t(j + 1) * P, P) : x;
    lambda[from[j]] = (after - mine).to(at::kDouble).pow(2).mean().item<double>();
  }
  return lambda;
}

void HarmonicaTrainer::refresh_weights() {
  const auto lambda = image_error_proxy();
  CL_CHECK(at::isfinite(lambda).all().item<bool>(), "harmonica: the image-error proxy is not finite");
  const auto routed = at::tensor(base_.routed_steps(), at::kLong);
  const double mean = lambda.index_select(0, routed).mean().item<double>();
  auto w = at::zeros({steps_}, at::kDouble);
  w.index_fill_(0, routed, 1.0);
  if (mean > 0) w = (lambda / mean).clamp_min(kWeightFloor) * w;
  weights_ = w;
}

HarmonicaTrainer::Loss HarmonicaTrainer::evaluate(int64_t first, int64_t n, bool hard) {
  torch::NoGradGuard no_grad;
  CL_CHECK(first >= 0 && n >= 1 && first + n <= base_.pairs().count(),
           "harmonica: trajectories [" << first << ", " << first + n << ") of " << base_.pairs().count());
  const int last = int(base_.routed_steps().back());
  Loss sum;
  scratch_router_->set_hard_blend(hard);
  for (int64_t a = first; a < first + n; a += o_.batch_size) {
    const int64_t b = std::min<int64_t>(o_.batch_size, first + n - a);
    auto gen = seeded(o_.seed, kEvalSeed + uint64_t(a));
    const auto traj = at::arange(a, a + b, at::kLong);
    at::Tensor x = base_.pairs().x[0].index_select(0, traj);
    const at::Tensor labels = base_.pairs().labels.index_select(0, traj);
    scratch_hooks_->begin_run(steps_);
    for (int k = 0; k <= last; ++k) {
      const bool routed = routed_[size_t(k)];
      at::Tensor target;
      if (routed) target = teacher(x, k, traj, labels);
      scratch_router_->set_mode(routed ? L2cRouter::Mode::Unroll : L2cRouter::Mode::Fill);
      scratch_hooks_->begin_step(step_index(k));
      const auto out = guided(*scratch_hooks_, x, k, labels);
      if (routed) {
        const double mse = (out - target).pow(2).mean().item<double>();
        const auto s = base_.logits()[k].sigmoid();
        const double reg = (hard ? (s > o_.threshold).to(at::kFloat) : s).mean().item<double>();
        const double w = weights_[k].item<double>();
        sum.total += (w * mse + o_.lambda * reg) * double(b), sum.mse += mse * double(b), sum.reg += reg * double(b);
      }
      x = sampler_.step(k, x, out, noise_like(x, gen));
    }
  }
  scratch_router_->set_hard_blend(false);
  scratch_router_->set_mode(L2cRouter::Mode::Infer);
  const double count = double(n) * double(base_.routed_steps().size());
  return {sum.total / count, sum.mse / count, sum.reg / count};
}

double router_image_mse(Backbone& bb, const Sampler& sampler, const Guidance& guidance, const at::Tensor& logits,
                        const L2cPairs& pairs, int64_t first, int64_t n, const L2cTrainOptions& o) {
  torch::NoGradGuard no_grad;
  CL_CHECK(first >= 0 && n >= 1 && first + n <= pairs.count(),
           "l2c: trajectories [" << first << ", " << first + n << ") of " << pairs.count());
  const int T = sampler.num_steps();
  L2cRouter router(logits.detach(), router_options(o));
  LayerHooks hooks(bb, {&router});
  PassThroughHooks plain(bb.linears());
  double sum = 0;
  for (int64_t a = first; a < first + n; a += o.batch_size) {
    const int64_t b = std::min<int64_t>(o.batch_size, first + n - a);
    auto gen = seeded(o.seed, kEvalSeed + uint64_t(a));
    Cond cond;
    cond.labels = pairs.labels.narrow(0, a, b);
    at::Tensor routed = pairs.x[0].narrow(0, a, b), uncached = routed;
    hooks.begin_run(T);
    for (int k = 0; k < T; ++k) {
      const auto t = at::full({b}, double(sampler.timesteps()[size_t(k)]), at::kFloat);
      const auto noise = sampler.needs_noise() ? at::randn(routed.sizes(), gen) : at::Tensor();
      hooks.begin_step({k, T, 0, k, T, sampler.timesteps()[size_t(k)]});
      routed = sampler.step(k, routed, guidance.eval(bb, routed, t, cond, o.cfg_scale, hooks), noise);
      uncached = sampler.step(k, uncached, guidance.eval(bb, uncached, t, cond, o.cfg_scale, plain), noise);
    }
    sum += (routed - uncached).to(at::kDouble).pow(2).mean().item<double>() * double(b);
  }
  return sum / double(n);
}

}  // namespace cachelab
