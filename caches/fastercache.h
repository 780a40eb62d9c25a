// FasterCache (Lv et al., 2024, arXiv 2410.19355; as diffusers' FasterCacheConfig applies it):
// two reuses, each inside a window of model timesteps (lo < t < hi).
//
// Dynamic feature reuse: every self-attention site (stream 0) is computed at the evaluations
// whose count is a multiple of `attention_interval` (counted per site, from 0); at the others
// its output is the last two outputs' extrapolation o1 + w (o1 - o0), w = `attention_weight`
// (diffusers' default 0.5; the paper lets w grow from 0 to 1), and that estimate becomes the
// newest of the two. An output is estimated only when both stored outputs hold the rows the
// call needs: at an evaluation that runs the conditional half alone, the conditional halves
// (the first rows) of what was stored; at one that runs both halves, both stored outputs must
// hold both. diffusers extrapolates at conditional-only evaluations alone (its history keeps
// conditional halves); here attention reuse also works with CFG-Cache off, as in the paper.
//
// CFG-Cache: at guided evaluations inside its window whose count is not a multiple of
// `uncond_interval` (and not the first), the model runs on the conditional half only and the
// unconditional output is estimated from it. At the full evaluations the difference of the two
// halves is split by frequency (2-D FFT over the last two dimensions, shifted; low = a disc of
// radius floor(min(H, W) x low_freq_radius) around the centre, high = the rest) and kept; at a
// skipped evaluation each part is first scaled by its weight (alpha_low inside low_freq_window,
// alpha_high inside high_freq_window, else 1; the scaling accumulates over consecutive skipped
// evaluations, as diffusers' state does) and the estimate is cond + IFFT(low + high), the real
// part (the same as IFFT(FFT(cond) + low + high) by linearity). `uncond_estimate: reuse` is the
// paper's naive baseline instead: the last full evaluation's unconditional output, unchanged.
//
// Needs classifier-free guidance (run.cfg_scale != 1) for CFG-Cache and image-like outputs
// ([B, C, ..., H, W]); `attention_interval: 1` / `uncond_interval: 1` turn either part off.
#pragma once
#include <ATen/core/Tensor.h>

#include <vector>

#include "framework/layer.h"

namespace cachelab {

struct FasterCacheOptions {
  int attention_interval = 2;                   // diffusers' spatial_attention_block_skip_range
  std::vector<double> attention_window = {-1, 681};  // spatial_attention_timestep_skip_range (exclusive)
  double attention_weight = 0.5;                // the extrapolation weight w
  int uncond_interval = 5;                      // unconditional_batch_skip_range
  std::vector<double> uncond_window = {-1, 641};     // unconditional_batch_timestep_skip_range (exclusive)
  std::vector<double> low_freq_window = {99, 901};   // low_frequency_weight_update_timestep_range
  std::vector<double> high_freq_window = {-1, 301};  // high_frequency_weight_update_timestep_range
  double alpha_low = 1.1;
  double alpha_high = 1.1;
  double low_freq_radius = 0.2;                 // the low band's radius / min(H, W) (the reference's // 5)
  std::string uncond_estimate = "frequency";    // frequency | reuse

  template <class V>
  void fields(V& v) {
    v("attention_interval", attention_interval, "self-attention: computed at every N-th evaluation inside the window, "
                                                "extrapolated at the others (1 = always computed)");
    v("attention_window", attention_window, "(lo, hi) model timesteps, exclusive, where attention may be extrapolated");
    v("attention_weight", attention_weight, "extrapolation weight w: o1 + w (o1 - o0); 0 = plain reuse");
    v("uncond_interval", uncond_interval, "guidance: both halves at every N-th evaluation inside the window, the "
                                          "conditional half alone at the others (1 = always both)");
    v("uncond_window", uncond_window, "(lo, hi) model timesteps, exclusive, where the unconditional half may be skipped");
    v("low_freq_window", low_freq_window, "(lo, hi) timesteps where the low-frequency difference is scaled by alpha_low");
    v("high_freq_window", high_freq_window, "(lo, hi) timesteps where the high-frequency difference is scaled by alpha_high");
    v("alpha_low", alpha_low, "scale of the low-frequency part of the unconditional-minus-conditional difference");
    v("alpha_high", alpha_high, "scale of the high-frequency part");
    v("low_freq_radius", low_freq_radius, "radius of the low-frequency disc, as a fraction of min(H, W)");
    v("uncond_estimate", uncond_estimate, "frequency (CFG-Cache) | reuse (the last full evaluation's unconditional "
                                          "output, the paper's naive baseline)");
  }
  template <class C>
  void check(C& c) const {
    c.require(attention_interval >= 1, "attention_interval", "must be >= 1");
    c.require(uncond_interval >= 1, "uncond_interval", "must be >= 1");
    for (auto* w : {&attention_window, &uncond_window, &low_freq_window, &high_freq_window})
      c.require(w->size() == 2 && (*w)[0] < (*w)[1],
                w == &attention_window ? "attention_window"
                : w == &uncond_window  ? "uncond_window"
                : w == &low_freq_window ? "low_freq_window"
                                        : "high_freq_window",
                "must be (lo, hi) with lo < hi");
    c.require(alpha_low > 0 && alpha_high > 0, "alpha_low", "alpha_low and alpha_high must be > 0");
    c.require(low_freq_radius >= 0 && low_freq_radius <= 1, "low_freq_radius", "must be in [0, 1]");
    c.one_of("uncond_estimate", uncond_estimate, {"frequency", "reuse"});
  }
};

class FasterCachePolicy final : public CachePolicy, public GuidanceCache {
 public:
  explicit FasterCachePolicy(const FasterCacheOptions& o) : o_(o) {}
  void begin_run(RunContext& ctx) override;
  void begin_step(const StepIndex& step) override;
  Tensors at(SiteCall& call, const Next& next) override;
  GuidanceCache* guidance_cache() override { return o_.uncond_interval > 1 ? this : nullptr; }

  bool skip_unconditional() override;
  at::Tensor estimate_unconditional(const at::Tensor& cond) override;
  void observe(const at::Tensor& cond, const at::Tensor& uncond) override;

  // The low-frequency mask [H, W] (bool, in the shifted spectrum) for images of H x W.
  at::Tensor low_band(int64_t H, int64_t W) const;

 private:
  struct SiteState {
    int calls = 0;
    std::vector<at::Tensor> o0, o1;   // the two latest outputs (conditional half)
  };
  bool inside(const std::vector<double>& w) const { return double(t_) > w[0] && double(t_) < w[1]; }
  FasterCacheOptions o_;
  std::vector<SiteState> sites_;
  std::vector<bool> attention_;       // per site: a stream-0 attention site
  int64_t t_ = 0;
  int outer_ = 0;
  int evals_ = 0;                     // guided evaluations so far
  bool skipping_ = false;             // this evaluation runs the conditional half alone
  at::Tensor low_, high_;             // the unconditional-minus-conditional difference, by band (complex)
  at::Tensor last_uncond_;            // uncond_estimate: reuse
};

}  // namespace cachelab
