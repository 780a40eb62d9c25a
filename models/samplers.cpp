#include "models/samplers.h"

#include <ATen/ATen.h>

#include <cmath>
#include <set>
#include <sstream>

#include "framework/error.h"

namespace cachelab {

NoiseSchedule NoiseSchedule::linear(int T, double beta_start, double beta_end) {
  CL_CHECK(T >= 2, "schedule: train_steps must be >= 2, got " << T);
  NoiseSchedule s;
  s.num_train_steps = T;
  double prod = 1.0;
  for (int t = 0; t < T; ++t) {
    double beta = beta_start + (beta_end - beta_start) * t / (T - 1);
    s.betas.push_back(beta);
    prod *= 1.0 - beta;
    s.alpha_bar.push_back(prod);
  }
  return s;
}

at::Tensor NoiseSchedule::q_sample(const at::Tensor& x0, const at::Tensor& t, const at::Tensor& noise) const {
  auto abar = at::tensor(alpha_bar, at::kDouble).index_select(0, t).to(x0.scalar_type());
  std::vector<int64_t> shape(x0.dim(), 1);
  shape[0] = x0.size(0);
  abar = abar.reshape(shape);
  return at::sqrt(abar) * x0 + at::sqrt(1 - abar) * noise;
}

std::vector<int64_t> spaced_timesteps(int T, int steps) {
  CL_CHECK(steps >= 1 && steps <= T, "sampler: steps must be in [1, " << T << "], got " << steps);
  std::vector<int64_t> ts;
  for (int k = steps - 1; k >= 0; --k) ts.push_back(int64_t(std::floor(double(k) * T / steps)));
  return ts;
}

namespace {
// Predicted clean sample and the epsilon consistent with it (after optional clipping),
// from an eps or a v prediction.
std::pair<at::Tensor, at::Tensor> x0_and_eps(const at::Tensor& x, const at::Tensor& out, double abar, bool clip,
                                             const std::string& prediction) {
  at::Tensor x0, eps_in;
  if (prediction == "v") {
    x0 = std::sqrt(abar) * x - std::sqrt(1 - abar) * out;
    eps_in = std::sqrt(1 - abar) * x + std::sqrt(abar) * out;
  } else {
    eps_in = out;
    x0 = (x - std::sqrt(1 - abar) * eps_in) / std::sqrt(abar);
  }
  if (!clip) return {x0, eps_in};
  x0 = x0.clamp(-1, 1);
  return {x0, (x - std::sqrt(abar) * x0) / std::sqrt(1 - abar)};
}
}  // namespace

NoiseSchedule scaled_linear_schedule(int T, double beta_start, double beta_end) {
  CL_CHECK(T >= 2, "schedule: train_steps must be >= 2, got " << T);
  NoiseSchedule s;
  s.num_train_steps = T;
  const double a = std::sqrt(beta_start), b = std::sqrt(beta_end);
  double prod = 1.0;
  for (int t = 0; t < T; ++t) {
    const double r = a + (b - a) * t / (T - 1);
    s.betas.push_back(r * r);
    prod *= 1.0 - r * r;
    s.alpha_bar.push_back(prod);
  }
  return s;
}

std::vector<int64_t> leading_timesteps(int T, int steps, int offset) {
  CL_CHECK(steps >= 1 && steps <= T, "sampler: steps must be in [1, " << T << "], got " << steps);
  std::vector<int64_t> ts;
  for (int64_t t = 0; t < T; t += T / steps) ts.push_back(t + offset);
  CL_CHECK(ts.back() < T, "sampler: steps_offset " << offset << " puts the last timestep past " << T - 1);
  return ts;
}

DdimSampler::DdimSampler(const DdimOptions& o) : o_(o) {
  CL_CHECK(o.eta >= 0, "ddim: eta must be >= 0, got " << o.eta);
  CL_CHECK(o.beta_schedule == "linear" || o.beta_schedule == "scaled_linear",
           "ddim: beta_schedule must be linear or scaled_linear, got `" << o.beta_schedule << "`");
  sched_ = o.beta_schedule == "linear" ? NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)
                                       : scaled_linear_schedule(o.train_steps, o.beta_start, o.beta_end);
  if (o.timestep_spacing == "leading") {
    auto up = leading_timesteps(o.train_steps, o.steps, o.steps_offset);
    ts_.assign(up.rbegin(), up.rend());
  } else {
    CL_CHECK(o.timestep_spacing == "floor", "ddim: timestep_spacing must be floor or leading, got `"
                                                << o.timestep_spacing << "`");
    ts_ = spaced_timesteps(o.train_steps, o.steps);
    for (auto& t : ts_) t += o.steps_offset;
    CL_CHECK(ts_.front() < o.train_steps, "ddim: steps_offset " << o.steps_offset << " puts a timestep past "
                                                                << o.train_steps - 1);
  }
}

at::Tensor DdimSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const {
  const int64_t C = x.size(1);
  const double abar = sched_.alpha_bar[ts_[i]];
  const double last = o_.set_alpha_to_one ? 1.0 : sched_.alpha_bar[0];
  const double abar_prev = i + 1 < int(ts_.size()) ? sched_.alpha_bar[ts_[i + 1]] : last;
  auto [x0, eps] = x0_and_eps(x, model_out.narrow(1, 0, C), abar, o_.clip_x0, o_.prediction);
  const double sigma = o_.eta * std::sqrt((1 - abar_prev) / (1 - abar)) * std::sqrt(1 - abar / abar_prev);
  auto out = std::sqrt(abar_prev) * x0 + std::sqrt(std::max(0.0, 1 - abar_prev - sigma * sigma)) * eps;
  if (sigma > 0 && noise.defined()) out = out + sigma * noise;
  return out;
}

DdpmSampler::DdpmSampler(const DdpmOptions& o)
    : o_(o), sched_(NoiseSchedule::linear(o.train_steps, o.beta_start, o.beta_end)),
      ts_(spaced_timesteps(o.train_steps, o.steps)) {
  CL_CHECK(o.variance == "small" || o.variance == "large",
           "ddpm: variance must be `small` or `large`, got `" << o.variance << "`");
}

at::Tensor DdpmSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const {
  const int64_t C = x.size(1);
  const int n = int(ts_.size());
  // Respaced schedule: this step goes from ts_[i] to ts_[i+1] (or to the clean sample).
  auto abar_at = [&](int j) { return j < n ? sched_.alpha_bar[ts_[j]] : 1.0; };
  const double abar = abar_at(i), abar_prev = abar_at(i + 1);
  const double beta = 1 - abar / abar_prev;
  auto [x0, eps] = x0_and_eps(x, model_out.narrow(1, 0, C), abar, o_.clip_x0, o_.prediction);
  auto mean = (beta * std::sqrt(abar_prev) / (1 - abar)) * x0 +
              ((1 - abar_prev) * std::sqrt(1 - beta) / (1 - abar)) * x;
  if (i + 1 >= n) return mean;  // last step: no noise
  const double post_var = beta * (1 - abar_prev) / (1 - abar);
  at::Tensor log_var;
  if (model_out.size(1) >= 2 * C) {  // learned interpolation between log(post_var) and log(beta)
    auto frac = (model_out.narrow(1, C, C) + 1) / 2;
    log_var = frac * std::log(beta) + (1 - frac) * std::log(std::max(post_var, 1e-20));
  } else {
    log_var = at::full_like(x, std::log(o_.variance == "small" ? post_var : beta));
  }
  CL_CHECK(noise.defined(), "ddpm: step needs noise");
  return mean + at::exp(0.5 * log_var) * noise;
}

std::vector<int64_t> adm_space_timesteps(int T, const std::string& respacing) {
  CL_CHECK(!respacing.empty(), "adm: timestep_respacing is empty; give e.g. \"250\" or \"ddim50\"");
  std::set<int64_t> kept;
  if (respacing.rfind("ddim", 0) == 0) {
    const std::string n = respacing.substr(4);
    CL_CHECK(!n.empty() && n.find_first_not_of("0123456789") == std::string::npos,
             "adm: timestep_respacing `" << respacing << "`: write ddimN with N a number of steps");
    const int64_t want = std::stoll(n);
    for (int64_t stride = 1; stride < T; ++stride)
      if ((T + stride - 1) / stride == want) {
        for (int64_t t = 0; t < T; t += stride) kept.insert(t);
        return {kept.begin(), kept.end()};
      }
    CL_FAIL("adm: timestep_respacing `" << respacing << "`: no integer stride gives exactly " << want << " of "
                                        << T << " steps");
  }
  std::vector<int64_t> counts;
  std::stringstream ss(respacing);
  for (std::string item; std::getline(ss, item, ',');) {
    CL_CHECK(!item.empty() && item.find_first_not_of("0123456789 ") == std::string::npos,
             "adm: timestep_respacing `" << respacing << "`: write step counts such as \"250\" or \"10,15,20\"");
    counts.push_back(std::stoll(item));
  }
  const int64_t per = T / int64_t(counts.size()), extra = T % int64_t(counts.size());
  int64_t start = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    const int64_t size = per + (int64_t(i) < extra ? 1 : 0), count = counts[i];
    CL_CHECK(count >= 1 && size >= count, "adm: timestep_respacing `" << respacing << "`: cannot divide a section of "
                                                                       << size << " steps into " << count);
    const double stride = count <= 1 ? 1.0 : double(size - 1) / double(count - 1);
    double cur = 0.0;  // accumulated, and rounded half to even, as ADM does
    for (int64_t k = 0; k < count; ++k, cur += stride) kept.insert(start + int64_t(std::nearbyint(cur)));
    start += size;
  }
  return {kept.begin(), kept.end()};
}

AdmSampler::AdmSampler(const AdmOptions& o) : o_(o) {
  CL_CHECK(o.method == "ddpm" || o.method == "ddim", "adm: method must be ddpm or ddim, got `" << o.method << "`");
  const double scale = 1000.0 / o.train_steps;
  base_ = NoiseSchedule::linear(o.train_steps, scale * 1e-4, scale * 0.02);
  const std::vector<int64_t> kept = adm_space_timesteps(o.train_steps, o.timestep_respacing);
  double last = 1.0;
  for (int64_t t : kept) {
    betas_.push_back(1.0 - base_.alpha_bar[size_t(t)] / last);
    last = base_.alpha_bar[size_t(t)];
  }
  const size_t n = betas_.size();
  double prod = 1.0;
  for (size_t j = 0; j < n; ++j) {
    abar_prev_.push_back(prod);
    prod *= 1.0 - betas_[j];
    abar_.push_back(prod);
  }
  for (size_t j = 0; j < n; ++j) {
    sqrt_recip_.push_back(std::sqrt(1.0 / abar_[j]));
    sqrt_recipm1_.push_back(std::sqrt(1.0 / abar_[j] - 1));
    post_var_.push_back(betas_[j] * (1.0 - abar_prev_[j]) / (1.0 - abar_[j]));
    coef1_.push_back(betas_[j] * std::sqrt(abar_prev_[j]) / (1.0 - abar_[j]));
    coef2_.push_back((1.0 - abar_prev_[j]) * std::sqrt(1.0 - betas_[j]) / (1.0 - abar_[j]));
  }
  for (size_t j = 0; j < n; ++j)  // the posterior variance is 0 at j = 0: ADM clips its log to j = 1's
    post_log_var_.push_back(std::log(n > 1 && j == 0 ? post_var_[1] : post_var_[j]));
  for (auto it = kept.rbegin(); it != kept.rend(); ++it) ts_.push_back(*it);
}

at::Tensor AdmSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor& noise) const {
  const int n = int(ts_.size());
  CL_CHECK(i >= 0 && i < n, "adm: step " << i << " outside [0, " << n << ")");
  const size_t j = size_t(n - 1 - i);  // ADM's index into the kept steps
  const int64_t C = x.size(1);
  // Coefficients are float64 and multiply float32 tensors as float32 (ADM's _extract_into_tensor).
  auto f = [](double v) { return float(v); };
  auto eps = model_out.narrow(1, 0, C);
  auto x0 = f(sqrt_recip_[j]) * x - f(sqrt_recipm1_[j]) * eps;
  if (o_.clip_denoised) x0 = x0.clamp(-1, 1);
  if (o_.method == "ddim") {
    auto e = (f(sqrt_recip_[j]) * x - x0) / f(sqrt_recipm1_[j]);
    const float a = f(abar_[j]), ap = f(abar_prev_[j]);
    const float sigma = float(o_.eta) * std::sqrt((1 - ap) / (1 - a)) * std::sqrt(1 - a / ap);
    auto mean = x0 * std::sqrt(ap) + std::sqrt(1 - ap - sigma * sigma) * e;
    if (j == 0 || sigma == 0) return mean;
    CL_CHECK(noise.defined(), "adm: a ddim step with eta > 0 needs noise");
    return mean + sigma * noise;
  }
  auto mean = f(coef1_[j]) * x0 + f(coef2_[j]) * x;
  if (j == 0) return mean;  // t == 0: no noise
  at::Tensor log_var;
  if (model_out.size(1) >= 2 * C) {  // learned range between the clipped posterior and beta
    auto frac = (model_out.narrow(1, C, C) + 1) / 2;
    log_var = frac * f(std::log(betas_[j])) + (1 - frac) * f(post_log_var_[j]);
  } else {
    const double var = o_.variance == "small" ? post_var_[j] : betas_[j];  // j > 0 here
    log_var = at::full_like(x, f(std::log(var)));
  }
  CL_CHECK(noise.defined(), "adm: a ddpm step needs noise");
  return mean + at::exp(0.5 * log_var) * noise;
}

EulerFlowSampler::EulerFlowSampler(const EulerFlowOptions& o) : o_(o) {
  for (int i = 0; i < o.steps; ++i)
    ts_.push_back(int64_t(std::llround((1.0 - double(i) / o.steps) * o.time_scale)));
}

at::Tensor EulerFlowSampler::step(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&) const {
  const double t = 1.0 - double(i) / o_.steps, t_next = 1.0 - double(i + 1) / o_.steps;
  return x + (t_next - t) * model_out.narrow(1, 0, x.size(1));
}

const NoiseSchedule& EulerFlowSampler::schedule() const {
  CL_FAIL("euler_flow has no discrete noise schedule (it samples a rectified flow); train with a DDPM objective "
          "and sample with ddim or ddpm");
}

HeunFlowSampler::HeunFlowSampler(const HeunFlowOptions& o) : o_(o) {
  CL_CHECK(o.steps >= 1 && o.time_scale >= 1, "heun_flow: steps and time_scale must be >= 1");
  for (int k = 0; k < o.steps; ++k)
    for (int j = k; j <= k + 1; ++j) ts_.push_back(int64_t(std::llround((1.0 - double(j) / o.steps) * o.time_scale)));
}

at::Tensor HeunFlowSampler::step(int, const at::Tensor&, const at::Tensor&, const at::Tensor&) const {
  CL_FAIL("heun_flow evaluates the model twice per step and keeps the predictor's values: call advance(), "
          "not step()");
}

at::Tensor HeunFlowSampler::advance(int i, const at::Tensor& x, const at::Tensor& model_out, const at::Tensor&,
                                    std::vector<at::Tensor>& state) const {
  CL_CHECK(i >= 0 && i < int(ts_.size()), "heun_flow: evaluation " << i << " outside [0, " << ts_.size() << ")");
  const int k = i / 2;
  const double dt = -1.0 / o_.steps;  // t_{k+1} - t_k
  auto v = model_out.narrow(1, 0, x.size(1));
  if (i % 2 == 0) {  // predictor at t_k: remember the start point and its velocity
    state = {x, v};
    return x + dt * v;
  }
  CL_CHECK(state.size() == 2, "heun_flow: corrector of step " << k << " without its predictor (evaluations must "
                                                              "run in order on one trajectory)");
  auto out = state[0] + (0.5 * dt) * (state[1] + v);
  state.clear();
  return out;
}

const NoiseSchedule& HeunFlowSampler::schedule() const {
  CL_FAIL("heun_flow has no discrete noise schedule (it samples a rectified flow); train with a DDPM objective "
          "and sample with ddim or ddpm");
}

}  // namespace cachelab
