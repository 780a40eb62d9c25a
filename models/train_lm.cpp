#include "models/train_lm.h"

#include <ATen/ATen.h>

#include <cmath>
#include <cstdio>

#include "framework/error.h"
#include "framework/site.h"

namespace cachelab {

namespace {

// TiDAR's dual objective: prompt + answer as tokens (causal; the output at each position
// predicts the next token), then the whole answer as MASK at the answer's positions, cut into
// the model's draft blocks (each sees the tokens before its first position). Per sample the
// mean next-token cross-entropy over the answer plus the mean cross-entropy of the masks.
at::Tensor tidar_loss(Backbone& model, const MaskedLm& lm, const at::Tensor& prompt, const at::Tensor& answer,
                      const at::Tensor& images) {
  const int64_t B = answer.size(0), P = prompt.size(1), G = answer.size(1);
  auto x = at::cat({prompt, answer, at::full_like(answer, lm.mask_id())}, 1);
  Cond cond;
  cond.embeddings = images;
  cond.positions = at::cat({at::arange(P + G, at::kLong), at::arange(P, P + G, at::kLong)}).unsqueeze(0).expand({B, P + 2 * G});
  PassThroughHooks hooks(model.linears());
  auto logits = model.forward(x, at::zeros({B}), cond, hooks);
  CL_CHECK(logits.dim() == 3 && logits.size(1) == P + 2 * G, "masked_lm_loss: the model returned logits "
                                                                 << logits.sizes() << " for " << P + 2 * G << " positions");
  auto nll = [&](int64_t from) {
    return -at::log_softmax(logits.narrow(1, from, G).to(at::kFloat), -1).gather(2, answer.unsqueeze(2)).squeeze(2);
  };
  return nll(P - 1).mean(1) + nll(P + G).mean(1);
}

}  // namespace

at::Tensor masked_lm_loss(Backbone& model, const at::Tensor& prompt, const at::Tensor& answer, at::Generator gen,
                          double mask_eps, int64_t window, const at::Tensor& images) {
  const auto* lm = dynamic_cast<const MaskedLm*>(&model);
  CL_CHECK(lm, "masked_lm_loss: the backbone is not a masked-diffusion LM (tiny_mdlm, llada)");
  CL_CHECK(prompt.dim() == 2 && answer.dim() == 2 && prompt.size(0) == answer.size(0),
           "masked_lm_loss: expects prompts [B, P] and answers [B, G] of one batch");
  const int64_t B = answer.size(0), P = prompt.size(1), G = answer.size(1);
  const int64_t length = lm->tidar_block() > 0 ? P + 2 * G : P + G;
  CL_CHECK(length <= lm->max_length(), "masked_lm_loss: prompt (" << P << ") + answer (" << G << ")"
                                           << (lm->tidar_block() > 0 ? " + the masked answer" : "")
                                           << " exceed the model's max length " << lm->max_length());
  const bool topological = model.sequence_kind() == SequenceKind::Topological;
  CL_CHECK(window == 0 || topological, "masked_lm_loss: train.window is for topological models (llada's topological)");
  if (lm->tidar_block() > 0) return tidar_loss(model, *lm, prompt, answer, images);
  auto t = at::rand({B}, gen) * (1.0 - mask_eps) + mask_eps;                 // [B]
  auto masked = at::rand({B, G}, gen) < t.unsqueeze(1);                      // [B, G]
  auto per = at::full({B}, double(G), at::kFloat);                           // tokens the loss is normalised by
  Cond cond;  // context 0: logits of every position
  cond.embeddings = images;
  if (const int64_t bs = lm->block_size(); bs > 0) {
    // Block diffusion: one block k per sample (uniform over the answer's blocks) is masked with
    // ratio t; the blocks before it are clean (what decoding shows it), later ones clean and
    // without loss (block k cannot see them). The model learns the prompt from token_state.
    const int64_t nb = (G + bs - 1) / bs;
    auto k = at::randint(nb, {B}, gen);
    masked = masked & at::arange(G, at::kLong).div(bs, "floor").unsqueeze(0).eq(k.unsqueeze(1));
    per = (G - k * bs).clamp_max(bs).to(at::kFloat);
    cond.token_state = at::cat({at::full({B, P}, kTokenPrompt, at::kInt), at::full({B, G}, kTokenMasked, at::kInt)}, 1);
  }
  at::Tensor hidden;  // [B, G] bool: MASK without loss
  if (topological) {
    // WeDLM's streaming window: the answer is clean before a start s ~ U{0 .. G - 1}, masked
    // with ratio t over [s, s + W) and MASK without loss after (what decoding shows it).
    const int64_t W = window > 0 ? window : G;
    auto s = at::randint(G, {B}, gen).unsqueeze(1);
    auto pos = at::arange(G, at::kLong).unsqueeze(0);
    masked = masked & pos.ge(s) & pos.lt(s + W);
    hidden = pos.ge(s + W);
    per = (G - s.squeeze(1)).clamp_max(W).to(at::kFloat);
  }
  auto noisy = at::where(hidden.defined() ? masked | hidden : masked, at::full_like(answer, lm->mask_id()), answer);
  auto x = at::cat({prompt, noisy}, 1);
  PassThroughHooks hooks(model.linears());
  auto logits = model.forward(x, t * 1000.0, cond, hooks);
  CL_CHECK(logits.dim() == 3 && logits.size(1) == P + G, "masked_lm_loss: the model returned logits "
                                                             << logits.sizes() << " for " << P + G << " positions");
  auto logp = at::log_softmax(logits.narrow(1, P, G).to(at::kFloat), -1);
  auto nll = -logp.gather(2, answer.unsqueeze(2)).squeeze(2);                // [B, G]
  return (nll * masked.to(at::kFloat)).sum(1) / t / per;
}

void train_masked_lm(Backbone& model, const LmTrainOptions& o, const std::string& config_yaml) {
  const auto* lm = dynamic_cast<const MaskedLm*>(&model);
  CL_CHECK(lm, "`model: mdlm` trains a masked-diffusion LM backbone (tiny_mdlm, llada)");
  const int64_t V = CharTokenizer::vocab_size();
  CL_CHECK(lm->vocab_size() >= V, "the task tokenizer has " << V << " tokens: the backbone's vocabulary ("
                                                            << lm->vocab_size() << ") must hold them");
  CL_CHECK(lm->mask_id() >= V, "the backbone's MASK id " << lm->mask_id() << " collides with the task tokenizer's ids 0 .. "
                                                         << V - 1 << ": give it an id >= " << V);
  CL_CHECK(o.mask_eps > 0 && o.mask_eps < 1, "train.mask_eps must be in (0, 1), got " << o.mask_eps);
  const LmTaskSet set(o.task);
  const int64_t answers = lm->tidar_block() > 0 ? 2 : 1;  // TiDAR: the answer, then its masked copy
  for (const auto& task : set.tasks) {
    check_visual_inputs(task, lm->visual_tokens(), lm->visual_dim(), lm->vocab_size(), lm->mask_id(), "train");
    CL_CHECK(task.prompt_length() + answers * task.gen_length() <= lm->max_length(),
             "task " << task.name() << " needs " << task.prompt_length() << " + " << answers * task.gen_length()
                     << " tokens: more than the backbone's max length " << lm->max_length());
  }
  // Sub-batch sizes: largest remainders of batch_size x weight, at least one problem each.
  const size_t K = set.tasks.size();
  CL_CHECK(o.batch_size >= int(K), "train.batch_size " << o.batch_size << " is smaller than the " << K << " tasks mixed");
  std::vector<int64_t> sizes(K, 1);
  {
    int64_t left = o.batch_size - int64_t(K);
    std::vector<double> want(K);
    for (size_t i = 0; i < K; ++i) want[i] = std::max(0.0, set.weights[i] * o.batch_size - 1);
    for (size_t i = 0; i < K; ++i) {
      const int64_t f = std::min<int64_t>(left, int64_t(std::floor(want[i])));
      sizes[i] += f;
      left -= f;
      want[i] -= double(f);
    }
    while (left > 0) {
      size_t best = 0;
      for (size_t i = 1; i < K; ++i)
        if (want[i] > want[best]) best = i;
      ++sizes[best];
      want[best] = -1;
      --left;
    }
  }
  std::string mix;
  for (size_t i = 0; i < K; ++i)
    mix += (i ? ", " : "") + set.tasks[i].name() + " " + std::to_string(sizes[i]) + " (" +
           std::to_string(set.tasks[i].prompt_length()) + "+" + std::to_string(set.tasks[i].gen_length()) + " tokens)";
  char summary[200];
  std::snprintf(summary, sizeof summary, "masked-diffusion LM: %lld parameters, vocabulary %lld, MASK %lld",
                (long long)model.num_parameters(), (long long)lm->vocab_size(), (long long)lm->mask_id());
  const bool blocks = lm->block_size() > 0, topological = model.sequence_kind() == SequenceKind::Topological;
  const bool tidar = lm->tidar_block() > 0;
  CL_CHECK(o.window == 0 || topological, "train.window is for topological models (backbone.topological: true)");
  TrainRun run(model, o, "cachelab mdlm", summary,
               blocks ? "block-diffusion-sft" : topological ? "wedlm-window-sft" : tidar ? "tidar-dual" : "llada-sft",
               blocks ? "block diffusion SFT (block-causal attention): one answer block per problem masked with ratio t, the "
                        "blocks before it clean; cross-entropy of its masked tokens / t, normalised by its length"
               : tidar ? "TiDAR dual objective: next-token cross-entropy of the answer (causal tokens) + cross-entropy of "
                         "the fully masked answer in draft blocks, each seeing the clean tokens before it"
               : topological
                   ? "WeDLM window SFT (topological attention): the answer clean before a uniform start, masked with ratio t "
                     "over `window` positions from it and MASK after; cross-entropy of the masked tokens / t, normalised by "
                     "the window's length"
                   : "LLaDA SFT: masked answer-token cross-entropy / t, normalised by the answer length",
               config_yaml);
  std::printf("[train] batch per step: %s\n", mix.c_str());
  if (run.finished()) return;
  // The random stream depends on the step so that a resumed run draws fresh masks; problem
  // indices are step x batch_size + j in each task's training split.
  auto gen = at::detail::createCPUGenerator(uint64_t(o.seed) * 1000003ull + uint64_t(run.step()));
  const uint64_t base = uint64_t(o.seed) << 40;
  run.start();
  std::vector<double> task_loss(K, 0.0);  // per-problem mean loss of each task since the last progress line
  int task_steps = 0;
  while (run.step() < o.steps) {
    const double lr = run.begin_step();
    double total = 0;
    for (size_t i = 0; i < K; ++i) {
      const auto& task = set.tasks[i];
      const auto problems = task.problems(false, base + uint64_t(run.step()) * uint64_t(o.batch_size), sizes[i]);
      auto loss = masked_lm_loss(model, task.encode_prompts(problems), task.encode_answers(problems), gen, o.mask_eps,
                                 o.window, task.encode_images(problems))
                      .sum() / double(o.batch_size);
      loss.backward();
      const double l = loss.item<double>();
      total += l;
      task_loss[i] += l * double(o.batch_size) / double(sizes[i]);
    }
    run.end_step(total, lr);
    ++task_steps;
    if (K > 1 && (run.step() % o.log_every == 0 || run.step() == o.steps)) {  // the mix's loss per task
      std::string line;
      for (size_t i = 0; i < K; ++i) {
        char part[64];
        std::snprintf(part, sizeof part, "%s%s %.4f", i ? ", " : "", set.tasks[i].name().c_str(), task_loss[i] / task_steps);
        line += part;
        task_loss[i] = 0;
      }
      task_steps = 0;
      std::printf("[train]   per task: %s\n", line.c_str());
      std::fflush(stdout);
    }
  }
  std::printf("[train] done: %d steps; EMA weights in %s\n", run.step(), run.output().c_str());
}

}  // namespace cachelab
