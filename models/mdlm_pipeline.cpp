#include "models/mdlm_pipeline.h"

#include <ATen/ATen.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "framework/error.h"
#include "framework/ops.h"
#include "framework/registries.h"
#include "models/lm_decoders.h"
#include "models/masked_lm.h"

namespace cachelab {

namespace {

std::shared_ptr<const LmDecoder> build_decoder(const MdlmPipelineOptions& o) {
  ConfigNode node = o.decoder.node;
  if (o.decoder.empty()) {
    node = ConfigNode::make_map();
    node.map.emplace_back("type", ConfigNode::make_scalar("low_confidence"));
  }
  return lm_decoders().build(node);
}

}  // namespace

MdlmPipeline::MdlmPipeline(const MdlmPipelineOptions& o) : MdlmPipeline(o, build_decoder(o)) {}

MdlmPipeline::MdlmPipeline(const MdlmPipelineOptions& o, std::shared_ptr<const LmDecoder> decoder)
    : o_(o), decoder_(std::move(decoder)) {
  CL_CHECK(decoder_, "internal: mdlm pipeline without a decoder");
  CL_CHECK(!o.end_of_text || o.eos_id >= 0 || !o.task.task.empty(),
           "mdlm: end_of_text needs the EOS token: set pipeline.eos_id, or a task (its tokenizer's EOS)");
  CL_CHECK(o.gen_length >= 1 && o.block_length >= 1 && o.gen_length % o.block_length == 0,
           "mdlm: block_length " << o.block_length << " must divide gen_length " << o.gen_length);
  CL_CHECK(o.steps_per_block >= 1 && o.steps_per_block <= o.block_length,
           "mdlm: steps_per_block must be in [1, block_length]");
  window_ = decoder_->window();
  if (window_.masked > 0) {
    const int quota = (o.block_length + o.steps_per_block - 1) / o.steps_per_block;
    CL_CHECK(window_.masked <= o.gen_length, "mdlm: the sliding window holds " << window_.masked
                                                 << " masked positions, more than gen_length " << o.gen_length
                                                 << ": set decoder.window <= gen_length");
    CL_CHECK(window_.masked >= quota,
             "mdlm: the sliding window (decoder.window " << window_.masked << ") must hold at least the tokens the "
                 << "fixed schedule commits per step (ceil(block_length / steps_per_block) = " << quota
                 << "), so the run's " << num_steps(nullptr) << " steps can decode gen_length " << o.gen_length << " tokens");
  }
}

Cond MdlmPipeline::condition(const Backbone& backbone, int64_t start, int64_t n) const {
  return seeded_condition(backbone, start, n, 0);
}

Cond MdlmPipeline::seeded_condition(const Backbone& backbone, int64_t start, int64_t n, int64_t seed) const {
  if (o_.task.task.empty()) return Pipeline::condition(backbone, start, n);
  return task_condition(backbone, o_.task, o_.gen_length, "mdlm", start, n, seed);
}

Cond task_condition(const Backbone& backbone, const LmTaskOptions& o, int64_t gen_length, const char* who, int64_t start,
                    int64_t n, int64_t seed) {
  LmTaskOptions to = o;
  to.task_seed += seed;
  const LmTask task(to);
  const auto* lm = dynamic_cast<const MaskedLm*>(&backbone);
  CL_CHECK(lm, "the " << who << " pipeline needs a masked-diffusion LM backbone (tiny_mdlm, llada)");
  CL_CHECK(lm->vocab_size() >= CharTokenizer::vocab_size() && lm->mask_id() >= CharTokenizer::vocab_size(),
           who << ": task " << task.name() << " uses the character tokenizer's " << CharTokenizer::vocab_size()
               << " ids: the model's vocabulary (" << lm->vocab_size() << ") must hold them and its MASK id ("
               << lm->mask_id() << ") lie outside them");
  CL_CHECK(gen_length >= task.gen_length(), who << ": task " << task.name() << " answers in " << task.gen_length()
                                                << " tokens: set pipeline.gen_length >= " << task.gen_length() << " (got "
                                                << gen_length << ")");
  check_visual_inputs(task, lm->visual_tokens(), lm->visual_dim(), lm->vocab_size(), lm->mask_id(), who);
  const auto problems = task.problems(/*test=*/true, uint64_t(start), n);
  Cond c;
  c.tokens = task.encode_prompts(problems);
  c.embeddings = task.encode_images(problems);
  c.labels = task.encode_labels(problems);
  return c;
}

int MdlmPipeline::num_steps(const Sampler*) const { return o_.gen_length / o_.block_length * o_.steps_per_block; }
int MdlmPipeline::inner_steps(const Sampler*) const { return o_.steps_per_block; }

int MdlmPipeline::tokens_at_step(int inner) const {
  const int base = o_.block_length / o_.steps_per_block, extra = o_.block_length % o_.steps_per_block;
  return base + (inner < extra ? 1 : 0);
}

int64_t MdlmPipeline::timestep(const Sampler*, int i) const {
  const int block = i / o_.steps_per_block, inner = i % o_.steps_per_block;
  int done = block * o_.block_length;
  for (int s = 0; s < inner; ++s) done += tokens_at_step(s);
  return int64_t(std::lround(1000.0 * (o_.gen_length - done) / o_.gen_length));
}

at::Tensor MdlmPipeline::run(const PipelineInputs& in, StepDriver& driver) const {
  const auto* lm = dynamic_cast<const MaskedLm*>(in.backbone);
  CL_CHECK(lm, "the mdlm pipeline needs a masked-diffusion LM backbone (tiny_mdlm)");
  CL_CHECK(lm->tidar_block() == 0, "the mdlm pipeline does not decode a TiDAR model (llada's tidar): use pipeline type tidar");
  CL_CHECK(!in.run || in.run->cfg_scale == 1.0,
           "the mdlm pipeline has no classifier-free guidance: set run.cfg_scale: 1");
  Backbone& bb = *in.backbone;
  const auto dev = driver.options().device();
  const int64_t B = in.batch, V = lm->vocab_size(), mask = lm->mask_id();
  at::Tensor prompt;
  if (in.cond.tokens.defined()) {
    CL_CHECK(in.cond.tokens.dim() == 2 && in.cond.tokens.size(0) == B, "mdlm: Cond::tokens must be [B, P]");
    prompt = in.cond.tokens.to(dev, at::kLong);
  } else {
    prompt = driver.randn({B, int64_t(o_.prompt_length), V}).argmax(-1).to(at::kLong);
  }
  const int64_t P = prompt.size(1), G = o_.gen_length, L = P + G;
  CL_CHECK(L <= lm->max_length(), "mdlm: prompt (" << P << ") + gen_length (" << G << ") exceeds the model's max_length "
                                                  << lm->max_length());
  at::Tensor x = at::cat({prompt, at::full({B, G}, mask, prompt.options())}, 1);
  // Token states (framework/ops.h): prompt, masked, or the step a token was decoded at.
  at::Tensor state = at::cat({at::full({B, P}, kTokenPrompt, at::kInt), at::full({B, G}, kTokenMasked, at::kInt)}, 1);
  // The decoder's confidence at every masked position of the last forward's block (NaN elsewhere).
  at::Tensor confidence = at::full({B, L}, std::numeric_limits<float>::quiet_NaN(), at::kFloat);
  const int blocks = int(G / o_.block_length), S = o_.steps_per_block, T = num_steps(nullptr);
  Cond cond = in.cond;
  // End-of-Text Prediction: masked positions after a sample's first committed EOS become EOS at step i.
  const int64_t eos = !o_.end_of_text ? -1 : o_.eos_id >= 0 ? o_.eos_id : CharTokenizer::kEos;
  auto end_of_text = [&](int i) {
    if (eos < 0) return;
    auto gen = x.narrow(1, P, G);
    auto st = state.narrow(1, P, G);
    auto after = (gen.eq(eos).cpu() & st.ge(0)).to(at::kInt).cumsum(1).gt(0);  // at or after the first committed EOS
    auto fill = after & gen.eq(mask).cpu();
    if (!fill.any().item<bool>()) return;
    gen.masked_fill_(fill.to(gen.device()), eos);
    st.masked_fill_(fill, i);
  };
  // Iteration smoothing: the soft inputs of masked positions, the forwards so far.
  const bool smooth = o_.smooth_weight > 0;
  CL_CHECK(!smooth || lm->soft_inputs(), "mdlm: smooth_weight (iteration smoothing) needs a model that takes soft inputs (llada)");
  at::Tensor soft = smooth ? at::zeros({B, L, V}, driver.options().dtype(at::kFloat)) : at::Tensor();
  int iters = 0;
  auto threshold_floor = [&] { return smooth && o_.threshold_decay > 0 ? std::max(0.0, 1.0 - o_.threshold_decay * iters) : 0.0; };
  auto smooth_after = [&](const at::Tensor& logits, int64_t begin, const at::Tensor& still_masked) {
    if (!smooth) return;
    const double w = std::min(o_.smooth_init + o_.smooth_growth * iters, o_.smooth_weight);
    soft.narrow(1, begin, logits.size(1))
        .copy_(at::softmax(logits.to(at::kFloat), -1) * (w * still_masked.to(soft.device(), at::kFloat).unsqueeze(-1)));
    ++iters;
  };
  // The model's logits at [cond.context, cond.block_end) for the sequence x.
  auto forward = [&](Cond cd, int64_t ts) {
    if (smooth) cd.soft_tokens = soft;
    if (o_.cfg_scale > 0) {  // one forward on [x; x with its prompt masked]
      auto un = x.clone();
      un.narrow(1, 0, P).fill_(mask);
      Cond both = Cond::cat(cd, cd);
      auto t2 = at::full({2 * B}, double(ts), driver.options().dtype(at::kFloat));
      auto out = bb.forward(at::cat({x, un}), t2, both, driver.hooks()).to(at::kFloat);
      auto c = out.narrow(0, 0, B), u = out.narrow(0, B, B);
      return at::Tensor(u + (o_.cfg_scale + 1) * (c - u));
    }
    auto t = at::full({B}, double(ts), driver.options().dtype(at::kFloat));
    return bb.forward(x, t, cd, driver.hooks()).to(at::kFloat);
  };
  if (window_.masked > 0) {
    // Deferred Commitment Decoding: a window over the masked positions, shared by the batch
    // (the model returns one range of logits), [left, right). left = the first position still
    // masked in any sample; right only grows: by as many positions as the most-masked sample
    // lacks of `masked`, up to left + max_span. Everything at or beyond right is MASK in every
    // sample. The step budget is the fixed schedule's T steps: a sample with r masked tokens
    // and k steps left commits at least ceil(r / k) (>= 1) at this step, its most confident
    // window positions topped up beyond what the commit rule picked; when the window holds
    // fewer for some sample, it extends right (past max_span if need be) until it does. The
    // last step thus commits everything left, and the run always terminates after T steps.
    // StepIndex keeps the fixed schedule's (outer = i / S, inner = i % S): caches that
    // refresh at a block's first step refresh every S steps.
    const int64_t W = window_.masked, span = window_.max_span;
    int64_t right = P;
    for (int i = 0; i < T; ++i) {
      const int64_t ts = timestep(nullptr, i);
      driver.begin_step({i, T, i / S, i % S, S, ts});
      // Drawn at every step, so the stream does not depend on which steps ran a forward.
      auto noise_all = driver.randn({B, G}).to(at::kFloat);
      auto gen_masked = x.narrow(1, P, G).eq(mask).cpu();  // [B, G]
      if (!gen_masked.any().item<bool>()) {  // finished early (threshold / factor): no forward
        if (!driver.end_step(x)) return at::Tensor();
        continue;
      }
      const int64_t left = P + gen_masked.any(0).to(at::kFloat).argmax().item<int64_t>();
      auto masked_in = [&](int64_t a, int64_t b) {  // [B] masked counts in [a, b)
        return b > a ? gen_masked.narrow(1, a - P, b - a).sum(1) : at::zeros({B}, at::kLong);
      };
      {  // refill: the most-masked sample holds W masked positions again (capped by max_span)
        const int64_t most = masked_in(left, right).max().item<int64_t>();
        int64_t to = right + std::max<int64_t>(0, W - most);
        if (span > 0) to = std::min(to, left + span);
        right = std::max(right, std::min(to, L));
      }
      const int64_t k = T - i;  // steps left, this one included
      auto remaining = gen_masked.sum(1);                                  // [B]
      auto need = (remaining + (k - 1)).div(k, "floor");                   // ceil(r / k), 0 when done
      const int64_t lack = (need - masked_in(left, right)).max().item<int64_t>();
      if (lack > 0) right = std::min(L, right + lack);  // beyond right all is MASK: every sample gains `lack`
      const int64_t N = right - left;
      cond.context = left;
      cond.block_end = right;
      cond.step = i;
      cond.token_state = state;
      cond.confidence = confidence;
      at::Tensor logits = forward(cond, ts);
      if (!at::isfinite(logits).all().item<bool>()) {
        driver.end_step(logits);
        return at::Tensor();
      }
      auto win = x.narrow(1, left, N);
      auto masked = win.eq(mask);
      UnmaskStep us;
      us.logits = logits;
      us.masked = masked;
      us.noise = noise_all.narrow(1, left - P, N);
      us.inner = i % S;
      us.steps = S;
      us.quota = tokens_at_step(i % S);
      us.min_threshold = threshold_floor();
      UnmaskChoice c = decoder_->choose(us);
      CL_CHECK(c.unmask.defined() && c.unmask.sizes() == masked.sizes(), "internal: the decoder's choice has the wrong shape");
      auto pick = c.unmask & masked;
      auto conf = greedy_confidence(logits).first;  // [B, N] float64
      // The step budget: top each sample up to `need` with its most confident unpicked masked positions.
      auto deficit = (need.to(pick.device()) - pick.sum(1)).clamp_min(0);  // [B]
      if (deficit.max().item<int64_t>() > 0) {
        constexpr double kNegInf = -std::numeric_limits<double>::infinity();
        auto score = at::where(masked & ~pick, conf, at::full_like(conf, kNegInf));
        auto order = std::get<1>(score.sort(1, /*descending=*/true));
        auto first = at::arange(N, order.options()).unsqueeze(0).lt(deficit.unsqueeze(1));
        pick = pick | (at::zeros_like(pick).scatter(1, order, first) & masked);
      }
      auto updated = at::where(pick, c.tokens.to(win.scalar_type()), win);
      x = at::cat({x.narrow(1, 0, left), updated, x.narrow(1, right, L - right)}, 1);
      state.narrow(1, left, N).masked_fill_(pick.cpu(), i);
      smooth_after(logits, left, masked & ~pick);
      auto cf = conf.to(at::kFloat).cpu();
      confidence.fill_(std::numeric_limits<float>::quiet_NaN());
      confidence.narrow(1, left, N).copy_(at::where((masked & ~pick).cpu(), cf, confidence.narrow(1, left, N)));
      end_of_text(i);
      if (!driver.end_step(x)) return at::Tensor();
    }
    return x;
  }
  for (int b = 0; b < blocks; ++b) {
    const int64_t start = P + int64_t(b) * o_.block_length;
    cond.context = start;
    cond.block_end = start + o_.block_length;
    for (int s = 0; s < S; ++s) {
      const int i = b * S + s;
      const int64_t ts = timestep(nullptr, i);
      driver.begin_step({i, T, b, s, S, ts});
      cond.step = i;
      cond.token_state = state;
      cond.confidence = confidence;
      auto block = x.narrow(1, start, o_.block_length);
      auto masked = block.eq(mask);
      // Drawn at every step, so the stream does not depend on which steps ran a forward.
      auto noise = driver.randn({B, int64_t(o_.block_length)}).to(at::kFloat);
      if (!masked.any().item<bool>()) {  // finished early (threshold / factor decoding): no forward
        if (!driver.end_step(x)) return at::Tensor();
        continue;
      }
      // logits of the block's positions [start, start + block_length)
      at::Tensor logits = forward(cond, ts);
      if (!at::isfinite(logits).all().item<bool>()) {  // token ids cannot go non-finite: the logits tell
        driver.end_step(logits);
        return at::Tensor();
      }
      UnmaskStep us;
      us.logits = logits;
      us.masked = masked;
      us.noise = noise;
      us.inner = s;
      us.steps = S;
      us.quota = tokens_at_step(s);
      us.min_threshold = threshold_floor();
      UnmaskChoice c = decoder_->choose(us);
      CL_CHECK(c.unmask.defined() && c.unmask.sizes() == masked.sizes(), "internal: the decoder's choice has the wrong shape");
      auto pick = c.unmask & masked;
      if (s == S - 1) pick = masked;  // the block's last step decodes what is left
      auto updated = at::where(pick, c.tokens.to(block.scalar_type()), block);
      x = at::cat({x.narrow(1, 0, start), updated, x.narrow(1, start + o_.block_length, L - start - o_.block_length)}, 1);
      auto st = state.narrow(1, start, o_.block_length);
      st.masked_fill_(pick.cpu(), i);
      smooth_after(logits, start, masked & ~pick);
      auto conf = greedy_confidence(logits).first.to(at::kFloat).cpu();
      confidence.fill_(std::numeric_limits<float>::quiet_NaN());
      confidence.narrow(1, start, o_.block_length).copy_(at::where((masked & ~pick).cpu(), conf, confidence.narrow(1, start, o_.block_length)));
      end_of_text(i);
      if (!driver.end_step(x)) return at::Tensor();
    }
  }
  return x;
}

}  // namespace cachelab
