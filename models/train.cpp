#include "models/train.h"

#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "framework/error.h"
#include "framework/interrupt.h"
#include "framework/recorder.h"
#include "framework/safetensors.h"
#include "framework/sampler.h"
#include "models/diffusion_loss.h"
#include "framework/idx_dataset.h"

namespace cachelab {
namespace fs = std::filesystem;

namespace {

// <ckpt>/loss.csv (appended across resumed sittings) -> <ckpt>/train_log.h5.
void write_loss_curve(const std::string& ckpt, const std::string& config_yaml, const std::string& objective_description) {
  std::ifstream in(ckpt + "/loss.csv");
  std::vector<double> step, loss, lr;
  std::string line;
  while (std::getline(in, line)) {
    double s, l, r;
    if (std::sscanf(line.c_str(), "%lf,%lf,%lf", &s, &l, &r) == 3) step.push_back(s), loss.push_back(l), lr.push_back(r);
  }
  write_columns_h5(ckpt + "/train_log.h5", {{"step", step}, {"loss", loss}, {"lr", lr}},
                   {{"config_yaml", config_yaml}, {"objective", objective_description}});
}

}  // namespace

void train_dit(const DitOptions& model_opts, const TrainOptions& o, const std::string& config_yaml) {
  CL_CHECK(model_opts.class_dropout_prob > 0, "training needs class_dropout_prob > 0 for guidance");
  CL_CHECK(o.objective != "flow" || !model_opts.learn_sigma,
           "train.objective flow needs learn_sigma: false (a flow has no variance)");
  DitOptions mo = model_opts;
  mo.weights = "";
  Dit model(mo);
  char summary[160];
  std::snprintf(summary, sizeof summary, "DiT: %lld parameters, %d blocks, hidden %d, patch %d",
                (long long)model.num_parameters(), mo.depth, mo.hidden_size, mo.patch_size);
  train_diffusion(model, mo.class_dropout_prob, "cachelab dit", summary, o, config_yaml);
}

void train_unet(const UnetOptions& model_opts, const TrainOptions& o, const std::string& config_yaml) {
  CL_CHECK(model_opts.class_dropout_prob > 0, "training needs class_dropout_prob > 0 for guidance");
  UnetOptions mo = model_opts;
  mo.weights = "";
  Unet model(mo);
  std::string mult;
  for (int m : mo.channel_mult) mult += (mult.empty() ? "" : ",") + std::to_string(m);
  char summary[160];
  std::snprintf(summary, sizeof summary, "U-Net: %lld parameters, %d levels, channels %d x [%s], %d res blocks",
                (long long)model.num_parameters(), model.levels(), mo.channels, mult.c_str(), mo.res_blocks);
  train_diffusion(model, mo.class_dropout_prob, "cachelab unet", summary, o, config_yaml);
}

struct TrainRun::State {
  State(Backbone& m, const TrainOptions& opts, std::vector<at::Tensor> p)
      : model(m), o(opts), params(std::move(p)), opt(params, torch::optim::AdamWOptions(opts.lr).weight_decay(opts.weight_decay)) {}
  Backbone& model;
  TrainOptions o;
  std::string format, objective_description, config_yaml;
  std::string ckpt, out, model_ckpt, ema_ckpt, opt_ckpt;
  std::vector<at::Tensor> params;
  std::vector<std::pair<std::string, at::Tensor>> named, ema_named;
  std::vector<at::Tensor> ema;
  torch::optim::AdamW opt;
  int step = 0, start = 0, loss_n = 0;
  double loss_acc = 0;
  std::ofstream loss_log;
  std::chrono::steady_clock::time_point t0;

  void save_all() {
    std::vector<std::pair<std::string, std::string>> meta = {{"step", std::to_string(step)}};
    model.save(model_ckpt, meta);
    write_safetensors(ema_ckpt, ema_named, {{"step", std::to_string(step)}});
    torch::save(opt, opt_ckpt + ".tmp");
    fs::rename(opt_ckpt + ".tmp", opt_ckpt);
    write_safetensors(out, ema_named,
                      {{"step", std::to_string(step)}, {"format", format}, {"config_yaml", config_yaml}});
    loss_log.flush();
    write_loss_curve(ckpt, config_yaml, objective_description);
  }
};

TrainRun::TrainRun(Backbone& model, const TrainOptions& o, const std::string& format, const std::string& summary,
                   const std::string& objective, const std::string& objective_description,
                   const std::string& config_yaml) {
  at::set_num_threads(o.threads);
  torch::manual_seed(o.seed);
  s_ = std::make_unique<State>(model, o, model.trainable_parameters());
  State& s = *s_;
  s.format = format;
  s.objective_description = objective_description;
  s.config_yaml = config_yaml;
  s.ckpt = resolve_path(o.checkpoint_dir);
  s.out = resolve_path(o.output);
  fs::create_directories(s.ckpt);
  for (auto& kv : model.named_tensors()) s.named.push_back(kv);
  for (auto& kv : s.named) s.ema.push_back(kv.second.detach().clone());
  for (size_t i = 0; i < s.named.size(); ++i) s.ema_named.emplace_back(s.named[i].first, s.ema[i]);

  const std::string& ckpt = s.ckpt;
  const std::string& out = s.out;
  s.model_ckpt = ckpt + "/model.safetensors";
  s.ema_ckpt = ckpt + "/ema.safetensors";
  s.opt_ckpt = ckpt + "/optimizer.pt";
  if (fs::exists(s.model_ckpt) && fs::exists(s.ema_ckpt) && fs::exists(s.opt_ckpt)) {
    auto f = read_safetensors(s.model_ckpt);
    s.step = std::stoi(f.metadata.at("step"));
    load_into(s.named, s.model_ckpt, "delete " + ckpt + " to start over");
    load_into(s.ema_named, s.ema_ckpt, "delete " + ckpt + " to start over");
    torch::load(s.opt, s.opt_ckpt);
    std::printf("[train] resumed from %s at step %d\n", ckpt.c_str(), s.step);
  } else if (auto meta = fs::exists(out) ? read_safetensors(out).metadata : std::map<std::string, std::string>{};
             meta.count("step")) {
    // No checkpoint on this machine (they live outside the repository), but the exported
    // EMA weights carry their step: continue from them with a fresh optimiser.
    s.step = std::stoi(meta.at("step"));
    load_into(s.named, out, "delete " + out + " to start over");
    load_into(s.ema_named, out, "delete " + out + " to start over");
    std::printf("[train] no checkpoint in %s: continuing from the exported EMA weights %s at step %d "
                "(optimiser state starts afresh)\n", ckpt.c_str(), out.c_str(), s.step);
  } else if (!o.init_from.empty()) {
    const std::string init = resolve_path(o.init_from);
    load_into(s.named, init, "train.init_from must be weights of the same architecture");
    for (size_t i = 0; i < s.named.size(); ++i) s.ema[i].copy_(s.named[i].second.detach());
    std::printf("[train] starting a new run in %s from the weights %s\n", ckpt.c_str(), init.c_str());
  } else {
    std::printf("[train] starting a new run in %s\n", ckpt.c_str());
  }
  std::printf("[train] %s; batch %d, lr %g, %d threads, objective %s\n", summary.c_str(), o.batch_size, o.lr,
              o.threads, objective.c_str());
}

TrainRun::~TrainRun() = default;

int TrainRun::step() const { return s_->step; }
const std::string& TrainRun::output() const { return s_->out; }

bool TrainRun::finished() const {
  if (s_->step < s_->o.steps) return false;
  std::printf("[train] already at step %d of %d: nothing to do\n", s_->step, s_->o.steps);
  return true;
}

void TrainRun::start() {
  State& s = *s_;
  s.loss_log.open(s.ckpt + "/loss.csv", std::ios::app);
  if (s.step == 0) s.loss_log << "step,loss,lr,elapsed_s\n";
  s.t0 = std::chrono::steady_clock::now();
  s.loss_acc = 0;
  s.loss_n = 0;
  s.start = s.step;
}

double TrainRun::begin_step() {
  State& s = *s_;
  const TrainOptions& o = s.o;
  double lr = o.lr * std::min(1.0, double(s.step + 1) / std::max(1, o.warmup));
  for (int d : o.decay_steps)
    if (s.step >= d) lr *= o.decay_factor;
  for (auto& g : s.opt.param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(lr);
  s.opt.zero_grad();
  return lr;
}

void TrainRun::end_step(double l, double lr) {
  State& s = *s_;
  const TrainOptions& o = s.o;
  if (o.grad_clip > 0) torch::nn::utils::clip_grad_norm_(s.params, o.grad_clip);
  s.opt.step();
  int& step = s.step;
  ++step;
  {
    torch::NoGradGuard g;
    const double d = std::min(o.ema_decay, (1.0 + step) / (10.0 + step));
    for (size_t i = 0; i < s.ema.size(); ++i) s.ema[i].mul_(d).add_(s.named[i].second.detach(), 1 - d);
  }
  CL_CHECK(std::isfinite(l), "training diverged at step " << step << " (loss " << l << "); lower lr");
  s.loss_acc += l;
  ++s.loss_n;
  const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - s.t0).count();
  s.loss_log << step << "," << l << "," << lr << "," << elapsed << "\n";
  if (step % o.log_every == 0 || step == o.steps) {
    const double per = elapsed / (step - s.start);
    std::printf("[train] step %d/%d  loss %.4f  lr %.2e  %.2f s/step  eta %.0f min\n", step, o.steps,
                s.loss_acc / s.loss_n, lr, per, per * (o.steps - step) / 60);
    std::fflush(stdout);
    s.loss_acc = 0;
    s.loss_n = 0;
  }
  if (step % o.checkpoint_every == 0 || step == o.steps) s.save_all();
  if (interrupted()) {  // SIGINT / SIGTERM: keep this step's state, so a resume continues exactly here
    if (step % o.checkpoint_every != 0 && step != o.steps) s.save_all();
    std::printf("[train] stopped at step %d (checkpoint written); re-run to resume\n", step);
    std::fflush(stdout);
    throw_if_interrupted();
  }
}

void train_diffusion(Backbone& model, double class_dropout_prob, const std::string& format,
                     const std::string& summary, const TrainOptions& o, const std::string& config_yaml) {
  CL_CHECK(class_dropout_prob > 0, "training needs class_dropout_prob > 0 for guidance");
  CL_CHECK(o.objective == "eps" || o.objective == "flow",
           "train.objective must be `eps` or `flow`, got `" << o.objective << "`");
  const bool flow = o.objective == "flow";
  CL_CHECK(o.time_scale >= 1, "train.time_scale must be >= 1, got " << o.time_scale);
  TrainRun run(model, o, format, summary, o.objective,
               flow ? "rectified flow velocity MSE" : "DDPM epsilon MSE (+ improved-DDPM bound term with learn_sigma)",
               config_yaml);
  if (run.finished()) return;
  const int num_classes = model.num_classes();
  const int input_size = int(model.sample_shape().at(1));

  ImageDataset data = load_idx_dataset(default_data_dir(), o.dataset, "train", input_size);
  const int64_t n = data.images.size(0);
  NoiseSchedule sched = NoiseSchedule::linear();
  // The random stream depends on the step so that a resumed run draws fresh batches.
  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed) * 1000003ull + uint64_t(run.step()));

  run.start();
  while (run.step() < o.steps) {
    auto idx = at::randint(n, {o.batch_size}, gen, at::kLong);
    auto x0 = data.images.index_select(0, idx);
    auto y = data.labels.index_select(0, idx);
    auto drop = at::rand({o.batch_size}, gen) < class_dropout_prob;
    y = at::where(drop, at::full_like(y, num_classes), y);
    at::Tensor t, model_t, xt;
    auto noise = at::randn(x0.sizes(), gen);
    if (flow) {
      t = at::rand({o.batch_size}, gen);
      xt = flow_interpolate(x0, noise, t);
      model_t = t * double(o.time_scale);
    } else {
      t = at::randint(sched.num_train_steps, {o.batch_size}, gen, at::kLong);
      xt = sched.q_sample(x0, t, noise);
      model_t = t.to(at::kFloat);
    }

    const double lr = run.begin_step();
    PassThroughHooks hooks(model.linears());
    Cond cond;
    cond.labels = y;
    auto pred = model.forward(xt, model_t, cond, hooks);
    auto loss = flow ? flow_loss(pred, x0, noise).mean() : diffusion_loss(sched, pred, x0, xt, t, noise).total();
    loss.backward();
    run.end_step(loss.item<double>(), lr);
  }
  std::printf("[train] done: %d steps; EMA weights in %s\n", run.step(), run.output().c_str());
}

}  // namespace cachelab
