#include "caches/l2c_train.h"

#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>

#include "caches/harmonica_train.h"
#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/paths.h"
#include "framework/pipeline.h"
#include "framework/recorder.h"
#include "framework/registries.h"
#include "framework/sampler.h"

namespace cachelab {

// --- LayerHooks

LayerHooks::LayerHooks(const Backbone& bb, std::vector<SiteLayer*> layers)
    : bb_(bb), layers_(std::move(layers)), ops_(std::make_unique<DenseOps>()) {
  ops_->begin_run(bb.linears(), nullptr);
  decisions_.assign(bb.sites().size(), uint8_t(Decision::Skipped));
}

LayerHooks::~LayerHooks() = default;

void LayerHooks::begin_run(int steps) {
  ctx_ = RunContext();
  ctx_.sites = &bb_.sites();
  ctx_.taps = &bb_.taps();
  ctx_.linears = &bb_.linears();
  ctx_.steps = ctx_.inner_steps = steps;
  ctx_.recording = false;
  for (auto* l : layers_) l->begin_run(ctx_);
}

void LayerHooks::begin_step(const StepIndex& step) {
  step_ = step;
  std::fill(decisions_.begin(), decisions_.end(), uint8_t(Decision::Skipped));
  for (auto* l : layers_) l->begin_step(step);
}

Tensors LayerHooks::at(int site, Tensors inputs, const SiteFn& compute) {
  SiteCall call;
  call.site = site;
  call.info = &bb_.sites()[size_t(site)];
  call.step = &step_;
  call.inputs = std::move(inputs);
  SiteLog log;
  log.site = site;
  call.log = &log;
  Tensors out = dispatch(0, call, compute);
  Decision d = log.decision;
  if (d != Decision::Blend && log.computed_fraction > 0)
    d = log.computed_fraction >= 1.0 ? Decision::Compute : Decision::Partial;
  decisions_[size_t(site)] = uint8_t(d);
  return out;
}

Tensors LayerHooks::dispatch(size_t k, SiteCall& call, const SiteFn& compute) {
  if (k == layers_.size()) {
    call.log->computed_fraction +=
        call.rows.defined() ? double(call.rows.size(0)) / double(call.inputs[0].size(1)) : 1.0;
    return compute(call);
  }
  return layers_[k]->at(call, [this, k, &compute](const SiteCall& c) {
    SiteCall inner = c;
    return dispatch(k + 1, inner, compute);
  });
}

// --- pairs

L2cPairs sample_l2c_pairs(Backbone& bb, const Sampler& sampler, const Guidance& guidance, double cfg_scale,
                          int64_t n, int64_t batch, int64_t seed) {
  torch::NoGradGuard no_grad;
  const int T = sampler.num_steps();
  auto gen = at::detail::createCPUGenerator(uint64_t(seed) * 1000003ull + 17);
  std::vector<int64_t> shape = bb.sample_shape();
  PassThroughHooks hooks(bb.linears());
  L2cPairs p;
  p.labels = bb.num_classes() > 0 ? at::arange(n, at::kLong).remainder(bb.num_classes()) : at::zeros({n}, at::kLong);
  std::vector<at::Tensor> xs, outs;  // per batch: [T, b, ...]
  for (int64_t b0 = 0; b0 < n; b0 += batch) {
    const int64_t b = std::min(batch, n - b0);
    std::vector<int64_t> s = shape;
    s.insert(s.begin(), b);
    auto x = at::randn(s, gen);
    Cond cond;
    cond.labels = p.labels.narrow(0, b0, b);
    std::vector<at::Tensor> bx, bo;
    for (int i = 0; i < T; ++i) {
      auto t = at::full({b}, double(sampler.timesteps()[size_t(i)]), at::kFloat);
      auto out = guidance.eval(bb, x, t, cond, cfg_scale, hooks);
      bx.push_back(x);
      bo.push_back(out);
      at::Tensor noise;
      if (sampler.needs_noise()) noise = at::randn(x.sizes(), gen);
      x = sampler.step(i, x, out, noise);
    }
    xs.push_back(at::stack(bx));
    outs.push_back(at::stack(bo));
  }
  p.x = at::cat(xs, 1);
  p.target = at::cat(outs, 1);
  std::vector<float> ts;
  for (auto v : sampler.timesteps()) ts.push_back(float(v));
  p.t = at::tensor(ts, at::kFloat);
  return p;
}

// --- trainer

struct L2cTrainer::Adam {
  explicit Adam(const at::Tensor& p, double lr) : opt({p}, torch::optim::AdamOptions(lr)) {}
  torch::optim::Adam opt;
};

L2cTrainer::L2cTrainer(Backbone& bb, const Guidance& guidance, L2cPairs pairs, int64_t train_count,
                       const L2cTrainOptions& o)
    : bb_(bb), guidance_(guidance), pairs_(std::move(pairs)), train_count_(train_count), o_(o) {
  CL_CHECK(train_count_ >= 1 && train_count_ <= pairs_.count(),
           "l2c training: " << train_count_ << " training trajectories of " << pairs_.count());
  CL_CHECK(pairs_.steps() >= 2, "l2c training needs at least 2 sampling steps (pairs of consecutive steps)");
  for (auto& [name, t] : bb_.named_tensors()) t.requires_grad_(false);
  const L2cLayout layout = l2c_layout(bb_.sites());
  CL_CHECK(layout.routed > 0, "l2c training: the backbone has no site a router can route (no branch site, no attn or "
                              "mlp site in its main stream)");
  for (int i = 1; i < pairs_.steps(); ++i)
    if (o_.full_every == 0 || i % o_.full_every != 0) routed_.push_back(i);
  CL_CHECK(!routed_.empty(), "l2c training: full_every " << o_.full_every << " leaves no routed step in "
                                                         << pairs_.steps());
  logits_ = at::full({pairs_.steps(), layout.rows, layout.kinds}, o_.init_logit, at::kFloat).set_requires_grad(true);
  L2cOptions ro;
  ro.router = "(being trained)";
  ro.threshold = o_.threshold;
  ro.full_every = o_.full_every;
  router_ = std::make_unique<L2cRouter>(logits_, ro);
  hooks_ = std::make_unique<LayerHooks>(bb_, std::vector<SiteLayer*>{router_.get()});
  hooks_->begin_run(pairs_.steps());
  adam_ = std::make_unique<Adam>(logits_, o_.lr);
}

L2cTrainer::~L2cTrainer() = default;

L2cTrainer::Loss L2cTrainer::objective(const at::Tensor& traj, const at::Tensor& step, bool backward, bool hard) {
  const int64_t N = pairs_.count();
  auto rows = [&](const at::Tensor& all, const at::Tensor& s) {
    return all.flatten(0, 1).index_select(0, s * N + traj);
  };
  Cond cond;
  cond.labels = pairs_.labels.index_select(0, traj);
  {
    // Step i-1's full computation fills the cache (no graph: a constant of the loss).
    torch::NoGradGuard no_grad;
    router_->set_mode(L2cRouter::Mode::Fill);
    const auto prev = step - 1;
    guidance_.eval(bb_, rows(pairs_.x, prev), pairs_.t.index_select(0, prev), cond, o_.cfg_scale, *hooks_);
  }
  std::unique_ptr<torch::NoGradGuard> no_grad;
  if (!backward) no_grad = std::make_unique<torch::NoGradGuard>();
  router_->set_mode(L2cRouter::Mode::Blend);
  router_->set_row_steps(step);
  router_->set_hard_blend(hard);
  auto pred = guidance_.eval(bb_, rows(pairs_.x, step), pairs_.t.index_select(0, step), cond, o_.cfg_scale, *hooks_);
  auto mse = (pred - rows(pairs_.target, step)).pow(2).mean();
  auto scores = logits_.index_select(0, step).sigmoid();
  auto reg = (hard ? (scores > o_.threshold).to(at::kFloat) : scores).mean();
  auto loss = mse + o_.lambda * reg;
  if (backward) loss.backward();
  router_->set_row_steps(at::Tensor());
  router_->set_hard_blend(false);
  router_->set_mode(L2cRouter::Mode::Infer);
  return {loss.item<double>(), mse.item<double>(), reg.item<double>()};
}

L2cTrainer::Loss L2cTrainer::iterate(at::Generator& gen) {
  auto traj = at::randint(train_count_, {o_.batch_size}, gen, at::kLong);
  auto pick = at::randint(int64_t(routed_.size()), {o_.batch_size}, gen, at::kLong);
  auto step = at::tensor(routed_, at::kLong).index_select(0, pick);
  adam_->opt.zero_grad();
  Loss l = objective(traj, step, /*backward=*/true);
  CL_CHECK(std::isfinite(l.total), "l2c training diverged (loss " << l.total << "); lower train.lr");
  adam_->opt.step();
  {
    torch::NoGradGuard g;
    logits_.clamp_(-o_.clamp, o_.clamp);
  }
  return l;
}

L2cTrainer::Loss L2cTrainer::evaluate(int64_t first, int64_t n, bool hard) {
  std::vector<int64_t> traj, step;
  for (int64_t j = first; j < first + n; ++j)
    for (int64_t i : routed_) traj.push_back(j), step.push_back(i);
  Loss sum;
  const int64_t P = int64_t(traj.size()), B = o_.batch_size;
  for (int64_t a = 0; a < P; a += B) {
    const int64_t b = std::min(B, P - a);
    auto tt = at::tensor(std::vector<int64_t>(traj.begin() + a, traj.begin() + a + b), at::kLong);
    auto ss = at::tensor(std::vector<int64_t>(step.begin() + a, step.begin() + a + b), at::kLong);
    Loss l = objective(tt, ss, /*backward=*/false, hard);
    sum.total += l.total * b, sum.mse += l.mse * b, sum.reg += l.reg * b;
  }
  return {sum.total / P, sum.mse / P, sum.reg / P};
}

double L2cTrainer::skipped_fraction() const {
  auto s = logits_.detach().index_select(0, at::tensor(routed_, at::kLong)).sigmoid();
  return (s <= o_.threshold).to(at::kDouble).mean().item<double>();
}

// --- the command

void L2cRouterTrainer::train(Backbone& bb, const Sampler& sampler, const std::string& output, const std::string& log,
                             const std::string& recipe_yaml, const std::string& backbone_digest) const {
  L2cTrainOptions o = o_;
  o.output = output;
  o.log = log;
  train_l2c(bb, sampler, o, recipe_yaml, backbone_digest);
}

void train_l2c(Backbone& bb, const Sampler& sampler, const L2cTrainOptions& o, const std::string& config_yaml,
               const std::string& backbone_digest) {
  at::set_num_threads(o.threads);
  // The runs' default guidance (classifier-free, from the registry: caches/ knows no model).
  ConfigNode guidance_config = ConfigNode::make_map("guidance");
  guidance_config.child("type") = ConfigNode::make_scalar("cfg", "guidance.type");
  const auto guidance_ptr = guidances().build(guidance_config);
  const Guidance& guidance = *guidance_ptr;
  const bool harmonica = o.objective == "harmonica";
  const char* tag = harmonica ? "[harmonica]" : "[l2c]";
  const int T = sampler.num_steps();
  const L2cLayout layout = l2c_layout(bb.sites());
  char shape[64];
  std::snprintf(shape, sizeof(shape), "[%d, %d, %d]", T, layout.rows, layout.kinds);
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  std::printf("%s sampling %d + %d uncached trajectories of %d steps at guidance %g\n", tag, o.trajectories,
              o.eval_trajectories, T, o.cfg_scale);
  std::fflush(stdout);
  L2cPairs pairs =
      sample_l2c_pairs(bb, sampler, guidance, o.cfg_scale, o.trajectories + o.eval_trajectories, o.pool_batch, o.seed);
  const L2cPairs eval_pairs{pairs.x.narrow(1, o.trajectories, o.eval_trajectories), at::Tensor(),
                            pairs.labels.narrow(0, o.trajectories, o.eval_trajectories), pairs.t};
  if (harmonica)
    std::printf("%s %.0f s; training the router %s (layout %s: %s) along its own cached trajectories: %d "
                "iterations (one per routed step) on unrolls of %d samples, lr %g, lambda %g, teacher %s, image-error "
                "proxy on %d samples every %d iterations\n",
                tag, elapsed(), shape, layout.name.c_str(), layout.site_list().c_str(), o.iterations, o.batch_size, o.lr, o.lambda, o.teacher.c_str(), o.proxy_samples,
                o.refresh_every);
  else
    std::printf("%s %.0f s; training the router %s (layout %s: %s): %d iterations of %d pairs, lr %g, lambda %g\n",
                tag, elapsed(), shape, layout.name.c_str(), layout.site_list().c_str(), o.iterations, o.batch_size, o.lr, o.lambda);
  std::fflush(stdout);
  std::unique_ptr<HarmonicaTrainer> sdt;
  std::unique_ptr<L2cTrainer> pairwise;
  if (harmonica) sdt = std::make_unique<HarmonicaTrainer>(bb, sampler, guidance, std::move(pairs), o.trajectories, o);
  else pairwise = std::make_unique<L2cTrainer>(bb, guidance, std::move(pairs), o.trajectories, o);
  L2cTrainer& trainer = sdt ? sdt->base() : *pairwise;
  const L2cTrainer::Loss before = trainer.evaluate(o.trajectories, o.eval_trajectories, false);
  std::printf("%s held-out pair objective before: loss %.5f (mse %.5f, mean score %.3f)\n", tag, before.total,
              before.mse, before.reg);

  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed) * 1000003ull + 29);
  std::vector<double> it_col, loss_col, mse_col, reg_col, skip_col, time_col, step_col, weight_col;
  double acc = 0;
  int acc_n = 0;
  size_t refreshes = 0;
  const double t_train = elapsed();
  for (int it = 1; it <= o.iterations; ++it) {
    throw_if_interrupted();  // SIGINT / SIGTERM: stop after the iteration in flight, nothing written
    const L2cTrainer::Loss l = sdt ? sdt->iterate() : pairwise->iterate(gen);
    if (sdt && sdt->refreshes().size() > refreshes) {
      refreshes = sdt->refreshes().size();
      const auto w = sdt->weights();
      std::string row;
      for (int i = 0; i < T; i += 1)
        if (w[i].item<double>() > 0) {
          char b[16];
          std::snprintf(b, sizeof(b), " %.2f", w[i].item<double>());
          row += b;
        }
      std::printf("%s iteration %d: image-error proxy weights of the routed steps:%s\n", tag, it, row.c_str());
    }
    it_col.push_back(it), loss_col.push_back(l.total), mse_col.push_back(l.mse), reg_col.push_back(l.reg);
    skip_col.push_back(trainer.skipped_fraction()), time_col.push_back(elapsed());
    step_col.push_back(sdt ? sdt->last_step() : -1);
    weight_col.push_back(sdt ? sdt->weights()[sdt->last_step()].item<double>() : 1.0);
    acc += l.total, ++acc_n;
    if (it % o.log_every == 0 || it == o.iterations) {
      const double per = (elapsed() - t_train) / it;
      std::printf("%s iteration %d/%d  loss %.5f  (last: mse %.5f, mean score %.3f)  skip %.1f%%  %.2f s/it\n", tag,
                  it, o.iterations, acc / acc_n, l.mse, l.reg, 100 * skip_col.back(), per);
      std::fflush(stdout);
      acc = 0, acc_n = 0;
    }
  }
  const L2cTrainer::Loss after = trainer.evaluate(o.trajectories, o.eval_trajectories, false);
  const L2cTrainer::Loss hard = trainer.evaluate(o.trajectories, o.eval_trajectories, true);
  std::printf("%s held-out pair objective after: loss %.5f (mse %.5f, mean score %.3f); thresholded at %g: mse %.5f, "
              "computed fraction %.3f\n",
              tag, after.total, after.mse, after.reg, o.threshold, hard.mse, hard.reg);
  L2cTrainer::Loss unrolled;
  if (sdt) {
    unrolled = sdt->evaluate(o.trajectories, o.eval_trajectories, true);
    std::printf("%s held-out unrolled objective, thresholded: loss %.5f (mse %.5f along the cached trajectory)\n", tag,
                unrolled.total, unrolled.mse);
  }
  const double image_mse = router_image_mse(bb, sampler, guidance, trainer.logits(), eval_pairs, 0,
                                            o.eval_trajectories, o);
  std::printf("%s held-out final-image MSE of the thresholded router vs uncached: %.3g (PSNR %.1f dB on [-1, 1])\n",
              tag, image_mse, 10 * std::log10(4.0 / image_mse));

  auto fmt = [](double v) {
    char b[32];
    std::snprintf(b, sizeof(b), "%.6g", v);
    return std::string(b);
  };
  const std::string objective =
      harmonica ? "HarmoniCa: step-wise along the router's own cached trajectory, image-error-proxy weight x "
                  "MSE(blended guided output, teacher " + o.teacher + ") + lambda * mean sigmoid(logit)"
                : "MSE(blended guided output, uncached) + lambda * mean sigmoid(logit)";
  std::map<std::string, std::string> meta = {{"config_yaml", config_yaml},
                                             {"iterations", std::to_string(o.iterations)},
                                             {"full_every", std::to_string(o.full_every)},
                                             {"objective", objective},
                                             {"eval_loss_before", fmt(before.total)},
                                             {"eval_loss_after", fmt(after.total)},
                                             {"eval_mse_after", fmt(after.mse)},
                                             {"eval_mse_thresholded", fmt(hard.mse)},
                                             {"eval_image_mse_thresholded", fmt(image_mse)},
                                             {"skipped_fraction", fmt(trainer.skipped_fraction())},
                                             {kL2cLayoutKey, layout.name},
                                             {kL2cSitesKey, layout.site_list()},
                                             {kL2cBackboneDigestKey, backbone_digest}};
  if (sdt) {
    std::string w;
    for (int i = 0; i < T; ++i) w += (i ? " " : "") + fmt(sdt->weights()[i].item<double>());
    meta["iepo_weights"] = w;
    meta["eval_unrolled_mse_thresholded"] = fmt(unrolled.mse);
  }
  const std::string out = resolve_path(o.output), log = resolve_path(o.log);
  save_l2c_router(out, trainer.logits(), meta);
  if (const auto parent = std::filesystem::path(log).parent_path(); !parent.empty())
    std::filesystem::create_directories(parent);
  write_columns_h5(log,
                   {{"iteration", it_col}, {"loss", loss_col}, {"mse", mse_col}, {"mean_score", reg_col},
                    {"skipped_fraction", skip_col}, {"elapsed_s", time_col}, {"step", step_col},
                    {"weight", weight_col}},
                   {{"config_yaml", config_yaml}, {"objective", objective}});
  std::printf("%s done in %.0f s: router %s (skips %.1f%% of the routed sites at threshold %g), loss curve %s\n", tag,
              elapsed(), out.c_str(), 100 * trainer.skipped_fraction(), o.threshold, log.c_str());
}

}  // namespace cachelab
