// Video K/V caches: rolling_kv's sink frames and kv_bytes, forcing_kv (head-wise pruning),
// temp_cache (temporal merging) and video_mla (low-rank latents). What each must show: the settings that keep
// everything are the uncached run bit for bit; the store holds what the rule says (kv_bytes, exactly); the compressed
// stores attend as the rule says (sink + window = recomputing with that visibility; merged identical frames = the
// uncompressed output, 1e-5).
#include <ATen/ATen.h>

#include <algorithm>
#include <boost/test/unit_test.hpp>
#include <cmath>
#include <limits>

#include "caches/kv_cache.h"
#include "caches/video_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "models/tiny_video.h"
#include "models/video_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/test_util.h"

using namespace cachelab;

using cachelab::testing::extra_id;
using cachelab::testing::run_seq;

namespace {

// 5 chunks of 2 frames of 1x8x8 (16 tokens a frame), rope, 2 heads of width 16, 2 layers,
// 2 DDIM steps per chunk, batch 2.
struct VideoKvFixture {
  static constexpr int64_t kP = 16, kB = 2, kH = 2, kD = 16, kFrames = 10;
  TinyVideo model{[] {
    TinyVideoOptions o;
    o.chunk_frames = 2;
    o.frame_position = "rope";
    o.frame_size = 8;
    o.hidden_size = 32;
    o.num_heads = 2;
    o.depth = 2;
    return o;
  }()};
  VideoPipeline pipe{[] {
    VideoPipelineOptions o;
    o.num_chunks = 5;
    o.frames_per_chunk = 2;
    o.steps = 2;
    return o;
  }()};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  VideoKvFixture() {
    run.samples = 2;
    run.batch = 2;
    run.cfg_scale = 1;
    run.probe_samples = 2;
    ref_traj = run_seq(model, pipe, nullptr, run, nullptr, &ref);
  }
  Trajectory rolling(int window, int sink) {
    RollingKvOptions o;
    o.window = window;
    o.sink = sink;
    RollingKvCache cache(o);
    return run_seq(model, pipe, &cache, run, &ref, nullptr);
  }
  // kv_bytes logged at a step on layer `layer`'s attention site.
  double logged_bytes(const Trajectory& t, int step, int layer) const {
    const int e = extra_id(t, "kv_bytes"), site = find_site(model.sites(), "layers." + std::to_string(layer) + ".attn");
    BOOST_REQUIRE_GE(e, 0);
    return t.steps[size_t(step)].site_extra[size_t(e)][size_t(site)];
  }
  // Bytes of keys and values for `frames` frames of every sample and head of one layer (fp32).
  static double frame_bytes(double frames) { return 2.0 * kB * kH * kP * kD * 4 * frames; }
};

// Recomputes every frame at every step, with the attention visibility of a window and sink:
// what a rolling cache with that window and sink must equal.
class VisibilityOps final : public Ops {
 public:
  VisibilityOps(int64_t window, int64_t sink) : window_(window), sink_(sink) {}
  SeqPlan seq_begin(const SeqForward&) override {
    SeqPlan plan;
    plan.window = window_;
    plan.sink = sink_;
    return plan;
  }

 private:
  int64_t window_, sink_;
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(video_kv_sink, VideoKvFixture)

BOOST_AUTO_TEST_CASE(sink_with_a_window_as_long_as_the_video_is_bitwise_uncached) {
  for (int sink : {2, 4}) {
    auto t = rolling(int(kFrames), sink);
    BOOST_CHECK_MESSAGE(at::equal(t.samples, ref.samples), "sink " << sink);
    for (auto& s : t.steps) BOOST_CHECK_EQUAL(s.err_ref_rel_l1, 0.0);
    BOOST_CHECK_LT(t.flops, ref_traj.flops);
  }
}

BOOST_AUTO_TEST_CASE(window_and_sink_equal_recomputing_with_the_same_visibility) {
  for (auto [w, s] : std::vector<std::pair<int, int>>{{2, 2}, {1, 2}, {2, 1}, {3, 0}}) {
    auto t = rolling(w, s);
    VisibilityOps vis(w, s);
    auto r = run_seq(model, pipe, &vis, run, nullptr, nullptr);
    BOOST_CHECK_MESSAGE(at::equal(t.samples, r.samples), "window " << w << " sink " << s);
    BOOST_CHECK_LT(t.flops, r.flops);
    const double err = (t.samples - ref.samples).abs().mean().item<double>() / ref.samples.abs().mean().item<double>();
    BOOST_TEST_MESSAGE("rolling_kv window " << w << " sink " << s << ": rel L1 to full attention " << err
                                            << ", FLOPs / full recompute " << t.flops / ref_traj.flops);
  }
  // The sink is seen: with it the video differs from the window alone, and costs its keys.
  auto with = rolling(2, 2), without = rolling(2, 0);
  BOOST_CHECK(!at::equal(with.samples, without.samples));
  BOOST_CHECK(
      at::equal(with.samples.narrow(1, 0, 4), without.samples.narrow(1, 0, 4)));  // frames 0-3 see the sink anyway
  BOOST_CHECK_GT(with.flops, without.flops);
}

BOOST_AUTO_TEST_CASE(kv_bytes_stay_flat_with_window_and_sink_and_grow_without) {
  auto flat = rolling(2, 2), full = rolling(100, 0);
  for (int c = 0; c < 5; ++c)
    for (int s = 0; s < 2; ++s) {
      const int step = 2 * c + s, ctx = 2 * c, start = s == 0 ? std::max(0, ctx - 2) : ctx;
      // After the step: frames [0, ctx) without a window; [0, 2) and [start - 2, ctx) with it.
      const int kept = ctx == 0 ? 0 : std::min(2, ctx) + std::max(0, ctx - std::max(2, start - 2));
      for (int layer = 0; layer < 2; ++layer) {
        BOOST_CHECK_EQUAL(logged_bytes(full, step, layer), frame_bytes(ctx));
        BOOST_CHECK_EQUAL(logged_bytes(flat, step, layer), frame_bytes(kept));
      }
      const double f0 = logged_bytes(flat, step, 0), u0 = logged_bytes(full, step, 0);
      BOOST_TEST_MESSAGE("step " << step << " kv_bytes layer 0: window 2 + sink 2 " << f0 << ", no window " << u0);
    }
  // Flat once the window is full: chunks 3 and 4 hold the same; no window grows by a chunk.
  for (int s = 0; s < 2; ++s) {
    BOOST_CHECK_EQUAL(logged_bytes(flat, 6 + s, 0), logged_bytes(flat, 8 + s, 0));
    BOOST_CHECK_EQUAL(logged_bytes(full, 8 + s, 0) - logged_bytes(full, 6 + s, 0), frame_bytes(2));
  }
}

BOOST_AUTO_TEST_CASE(options_round_trip_and_bad_values_are_refused) {
  auto resolve = [](const std::string& yaml) { return ops_layers().resolve(parse_config_string(yaml, "exp.yaml")); };
  for (const char* yaml :
       {"type: rolling_kv\nwindow: 2\nsink: 2\n", "type: forcing_kv\nbudget: 3\nrecent: 1\n",
        "type: temp_cache\nthreshold: 0.9\ncount_bias: false\n", "type: video_mla\nrank: 4\nfit_frames: 1\n"}) {
    const std::string once = to_yaml(resolve(yaml));
    BOOST_CHECK_EQUAL(to_yaml(resolve(once)), once);
    BOOST_TEST_MESSAGE(once);
  }
  BOOST_CHECK_NE(to_yaml(resolve("type: rolling_kv\nsink: 3\n")).find("sink: 3"), std::string::npos);
  cachelab::testing::check_error([&] { resolve("type: rolling_kv\nsink: -1\n"); }, {"sink", ">= 0"});
  cachelab::testing::check_error([&] { resolve("type: forcing_kv\nbudget: 0\n"); }, {"budget", ">= 1"});
  cachelab::testing::check_error([&] { resolve("type: forcing_kv\nstatic_threshold: -1\n"); }, {"static_threshold"});
  cachelab::testing::check_error([&] { resolve("type: temp_cache\nthreshold: -2\n"); }, {"threshold"});
  cachelab::testing::check_error([&] { resolve("type: video_mla\nrank: 0\n"); }, {"rank", ">= 1"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(video_forcing_kv, VideoKvFixture)

BOOST_AUTO_TEST_CASE(budgets_that_keep_everything_equal_rolling_kv_without_a_window) {
  ForcingKvOptions o;
  o.static_threshold = 0;  // every head dynamic
  o.budget = int(kFrames);
  ForcingKvCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  auto r = rolling(100, 0);
  BOOST_CHECK(at::equal(t.samples, r.samples));
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, r.flops);
  for (int i = 0; i < 10; ++i) BOOST_CHECK_EQUAL(logged_bytes(t, i, 1), logged_bytes(r, i, 1));
  BOOST_CHECK(cache.classified());
  // The same share of the attended keys came from the store.
  const int hit = extra_id(t, "kv_hit_rate"), site = find_site(model.sites(), "layers.1.attn");
  BOOST_REQUIRE_GE(hit, 0);
  for (int i = 0; i < 10; ++i) {
    const double h = t.steps[size_t(i)].site_extra[size_t(hit)][size_t(site)];
    BOOST_CHECK_CLOSE(h, r.steps[size_t(i)].site_extra[size_t(hit)][size_t(site)], 1e-12);
    if (i >= 3) BOOST_CHECK_GT(h, 0.0);  // from chunk 1's second step on, frames 0-1 are stored
  }
}

BOOST_AUTO_TEST_CASE(all_static_heads_are_rolling_kv_with_window_recent_and_sink) {
  ForcingKvOptions o;
  o.profile_chunks = 0;
  o.static_threshold = 2;  // every head static
  o.sink = 2;
  o.recent = 2;
  ForcingKvCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  auto r = rolling(2, 2);
  BOOST_CHECK(at::equal(t.samples, r.samples));
  BOOST_CHECK_CLOSE(t.flops, r.flops, 1e-12);  // the keys each head scores (attended_keys) are rolling_kv's
  // Pruned after every step for the next queries (from frame ctx on): the sink [0, 2) and
  // [ctx - 2, ctx); rolling_kv drops only before a forward, so it holds a chunk more after
  // a chunk's first step.
  for (int i = 0; i < 10; ++i) {
    const int ctx = 2 * (i / 2), kept = ctx == 0 ? 0 : std::min(2, ctx) + ctx - std::max(2, ctx - 2);
    for (int layer = 0; layer < 2; ++layer) {
      BOOST_CHECK_EQUAL(logged_bytes(t, i, layer), frame_bytes(kept));
      BOOST_CHECK_LE(logged_bytes(t, i, layer), logged_bytes(r, i, layer));
      if (i % 2 == 1) BOOST_CHECK_EQUAL(logged_bytes(t, i, layer), logged_bytes(r, i, layer));
    }
  }
}

BOOST_AUTO_TEST_CASE(pruning_keeps_the_structure_of_static_heads_and_the_budget_of_dynamic_ones) {
  ForcingKvOptions o;
  o.sink = 1;
  o.recent = 2;
  o.budget = 5;
  o.profile_chunks = 3;  // chunk 2 (queries from frame 4) sees frame 1 in [sink, a - recent)
  // A first run measures the heads; the second splits them at the median mass.
  ForcingKvCache probe(o);
  run_seq(model, pipe, &probe, run, &ref, nullptr);
  std::vector<double> masses;
  for (int layer = 0; layer < 2; ++layer)
    for (int64_t h = 0; h < kH; ++h) {
      masses.push_back(probe.profiled_mass(layer, h));
      BOOST_TEST_MESSAGE("forcing_kv profiled mass layer " << layer << " head " << h << ": " << masses.back());
      BOOST_CHECK(std::isfinite(masses.back()) && masses.back() > 0 && masses.back() < 1);
    }
  std::sort(masses.begin(), masses.end());
  o.static_threshold = 0.5 * (masses[1] + masses[2]);
  ForcingKvCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  int statics = 0;
  double want_bytes = 0;
  for (int layer = 0; layer < 2; ++layer) {
    double tokens = 0;
    for (int64_t h = 0; h < kH; ++h) {
      const bool st = cache.is_static(layer, h);
      statics += st;
      // After the last step frames [0, 8) were stored: static keeps frame 0 and frames 6, 7;
      // dynamic keeps 5 of the 8.
      for (int64_t b = 0; b < kB; ++b) {
        BOOST_CHECK_EQUAL(cache.tokens(layer, b, h), (st ? 3 : 5) * kP);
        tokens += double(cache.tokens(layer, b, h));
      }
    }
    const double bytes = 2.0 * tokens * kD * 4;
    BOOST_CHECK_EQUAL(cache.bytes(layer), bytes);
    BOOST_CHECK_EQUAL(logged_bytes(t, 9, layer), bytes);
    want_bytes += bytes;
  }
  BOOST_CHECK_EQUAL(statics, 2);
  auto full = rolling(100, 0);
  const double full_bytes = logged_bytes(full, 9, 0) + logged_bytes(full, 9, 1);
  BOOST_CHECK_EQUAL(full_bytes, 2 * frame_bytes(8));
  BOOST_CHECK_CLOSE(want_bytes / full_bytes, (3.0 + 5.0) / 16.0, 1e-9);  // half the heads keep 3, half 5 of 8
  // Before the classification nothing was pruned.
  for (int i = 0; i < 6; ++i) BOOST_CHECK_EQUAL(logged_bytes(t, i, 0), logged_bytes(full, i, 0));
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
  BOOST_CHECK(at::equal(t.samples.narrow(1, 0, 6), ref.samples.narrow(1, 0, 6)));  // chunks 0-2: nothing pruned
  // Fewer keys scored from chunk 3 on; the same FLOPs before.
  BOOST_CHECK_LT(t.flops, full.flops);
  for (int i = 0; i < 6; ++i) BOOST_CHECK_CLOSE(t.steps[size_t(i)].flops, full.steps[size_t(i)].flops, 1e-12);
  const double err = (t.samples - ref.samples).abs().mean().item<double>() / ref.samples.abs().mean().item<double>();
  BOOST_TEST_MESSAGE("forcing_kv kv_bytes at the end / no pruning: " << want_bytes / full_bytes
                                                                     << ", FLOPs / no pruning " << t.flops / full.flops
                                                                     << ", rel L1 " << err);
}

BOOST_AUTO_TEST_CASE(refuses_a_masked_lm) {
  ForcingKvCache cache{ForcingKvOptions{}};
  SeqForward f;
  f.batch = 1;
  f.length = 4;
  f.kind = SequenceKind::Bidirectional;
  cachelab::testing::check_error([&] { cache.seq_begin(f); }, {"forcing_kv", "causal"});
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// Drives a K/V cache's protocol as tiny_video does with one-frame chunks of P tokens and two
// steps a chunk: frames [0, F); keys[f] and values[f] [B, H, P, d] are frame f's (the same
// whenever it is recomputed). Returns the output of the last call (queries q of frame F - 1).
at::Tensor drive(Ops& ops, const std::vector<at::Tensor>& keys, const std::vector<at::Tensor>& values,
                 const at::Tensor& q) {
  static const std::vector<LinearRef> none;
  ops.begin_run(none, nullptr);
  const int64_t F = int64_t(keys.size()), B = q.size(0), P = q.size(2);
  at::Tensor out;
  int index = 0;
  for (int64_t u = 0; u < F; ++u)
    for (int s = 0; s < 2; ++s) {
      ops.begin_step({index++, int(2 * F), int(u), s, 2, 0});
      SeqForward f;
      f.batch = B;
      f.length = u + 1;
      f.context = u;
      f.block_end = u + 1;
      f.num_layers = 1;
      f.kind = SequenceKind::Causal;
      const SeqPlan plan = ops.seq_begin(f);
      const int64_t S = plan.rows.defined() ? (plan.rows.size(1) > 0 ? plan.rows[0][0].item<int64_t>() : u + 1) : 0;
      for (int64_t a = S; a <= u; ++a) {
        std::vector<at::Tensor> ks(keys.begin() + S, keys.begin() + a + 1),
            vs(values.begin() + S, values.begin() + a + 1);
        AttnCall call;
        call.q_positions = at::full({B, P}, a, at::kLong);
        call.kv_positions = at::arange(S, a + 1, at::kLong).repeat_interleave(P).unsqueeze(0).expand({B, -1});
        out = ops.attention(call, a == F - 1 ? q : at::zeros_like(q), at::cat(ks, 2), at::cat(vs, 2));
      }
      ops.end_step();
    }
  return out;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(video_forcing_kv_rules)

BOOST_AUTO_TEST_CASE(dynamic_heads_drop_the_frame_most_similar_to_a_neighbour) {
  // Frames 1 and 2 share their keys; the others are random. Budget 4 of the 5 stored frames.
  at::manual_seed(5);
  const int64_t B = 1, H = 2, P = 4, d = 8;
  std::vector<at::Tensor> keys, values;
  for (int f = 0; f < 6; ++f) {
    keys.push_back(f == 2 ? keys[1] : at::randn({B, H, P, d}));
    values.push_back(at::randn({B, H, P, d}));
  }
  ForcingKvOptions o;
  o.profile_chunks = 0;
  o.static_threshold = 0;  // every head dynamic
  o.budget = 4;
  ForcingKvCache cache(o);
  drive(cache, keys, values, at::randn({B, H, P, d}));
  for (int64_t h = 0; h < H; ++h) {
    const auto frames = cache.stored_frames(0, 0, h);
    BOOST_CHECK(frames == std::vector<int64_t>({0, 2, 3, 4}) || frames == std::vector<int64_t>({0, 1, 3, 4}));
    BOOST_CHECK_EQUAL(cache.tokens(0, 0, h), 4 * P);
  }
  BOOST_CHECK_EQUAL(cache.bytes(0), double(2 * B * H * 4 * P * d * 4));
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(video_temp_cache, VideoKvFixture)

BOOST_AUTO_TEST_CASE(threshold_above_one_is_bitwise_the_uncached_run) {
  TempCacheOptions o;
  o.threshold = 1.5;
  TempCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  auto r = rolling(100, 0);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, r.flops);
  for (int i = 0; i < 10; ++i) BOOST_CHECK_EQUAL(logged_bytes(t, i, 0), logged_bytes(r, i, 0));
}

BOOST_AUTO_TEST_CASE(identical_frames_merge_to_one_frame_with_the_same_attention) {
  // Frames 0-4 identical, frame 5 (the queries' own, computed) different.
  at::manual_seed(3);
  const int64_t B = 2, H = 2, P = 6, d = 8;
  auto k0 = at::randn({B, H, P, d}), v0 = at::randn({B, H, P, d});
  std::vector<at::Tensor> keys(5, k0), values(5, v0);
  keys.push_back(at::randn({B, H, P, d}));
  values.push_back(at::randn({B, H, P, d}));
  auto q = at::randn({B, H, P, d}) * 2;
  auto make = [](double threshold, bool bias) {
    TempCacheOptions o;
    o.threshold = threshold;
    o.count_bias = bias;
    return TempCache(o);
  };
  TempCache exact = make(2.0, true), merged = make(0.99, true), unbiased = make(0.99, false);
  auto want = drive(exact, keys, values, q), got = drive(merged, keys, values, q),
       plain = drive(unbiased, keys, values, q);
  const double diff = (got - want).abs().max().item<double>(), off = (plain - want).abs().max().item<double>();
  BOOST_TEST_MESSAGE("temp_cache merged vs uncompressed: max |diff| " << diff << "; without the log(count) bias "
                                                                      << off);
  BOOST_CHECK_LT(diff, 1e-5);
  BOOST_CHECK_GT(off, 1e-2);  // the bias is what makes it equal
  // Five stored frames: one frame's tokens remain, each standing for five.
  BOOST_CHECK_EQUAL(exact.bytes(0), double(2 * B * H * 5 * P * d * 4));
  BOOST_CHECK_EQUAL(merged.bytes(0), double(2 * B * H * P * d * 4));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t h = 0; h < H; ++h) BOOST_CHECK_EQUAL(merged.tokens(0, b, h), P);
}

BOOST_AUTO_TEST_CASE(a_lower_threshold_stores_fewer_tokens_on_the_model) {
  TempCacheOptions o;
  o.threshold = 0.8;
  TempCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  auto r = rolling(100, 0);
  const double ratio = logged_bytes(t, 9, 0) / logged_bytes(r, 9, 0),
               ratio1 = logged_bytes(t, 9, 1) / logged_bytes(r, 9, 1);
  const double err = (t.samples - ref.samples).abs().mean().item<double>() / ref.samples.abs().mean().item<double>();
  BOOST_TEST_MESSAGE("temp_cache threshold 0.8: kv_bytes / uncompressed " << ratio << " (layer 0), " << ratio1
                                                                          << " (layer 1), rel L1 " << err);
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
  BOOST_CHECK_LT(ratio, 1.0);
  BOOST_CHECK_GE(ratio, 1.0 / 8);    // at least one frame's tokens of the 8 stored
  BOOST_CHECK_LT(t.flops, r.flops);  // a merged key is scored once
  BOOST_TEST_MESSAGE("temp_cache threshold 0.8: FLOPs / uncompressed " << t.flops / r.flops);
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_FIXTURE_TEST_SUITE(video_mla, VideoKvFixture)

BOOST_AUTO_TEST_CASE(latents_of_the_fitted_rank_are_what_is_stored) {
  double err_full = 0, err_low = 0;
  const double full_flops = rolling(100, 0).flops;
  for (int rank : {16, 4}) {
    VideoMlaOptions o;
    o.rank = rank;
    o.fit_frames = 2;  // the first chunk
    VideoMlaCache cache(o);
    auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
    // After the last step frames [0, 8) are stored: per sample and head 8 P latents of width
    // `rank` for keys and values, and the two bases [d, rank].
    const double want = 2.0 * kB * kH * (8 * kP * rank + kD * rank) * 4;
    for (int layer = 0; layer < 2; ++layer) {
      BOOST_CHECK_EQUAL(cache.bytes(layer), want);
      BOOST_CHECK_EQUAL(logged_bytes(t, 9, layer), want);
    }
    // Until the first chunk is stored (steps 0-1) nothing is; then the latents of frames [0, 2).
    BOOST_CHECK_EQUAL(logged_bytes(t, 2, 0), 2.0 * kB * kH * (2 * kP * rank + kD * rank) * 4);
    const double err = (t.samples - ref.samples).abs().max().item<double>();
    (rank == 16 ? err_full : err_low) = err;
    const double saved = want / frame_bytes(8);
    BOOST_TEST_MESSAGE("video_mla rank " << rank << ": kv_bytes / full store " << saved << ", max |diff| to uncached "
                                         << err);
    BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
    BOOST_CHECK_EQUAL(t.flops, full_flops);  // the same keys are scored
  }
  BOOST_CHECK_LT(err_full, 1e-4);  // full rank: an orthonormal change of basis, exact up to rounding
  BOOST_CHECK_GT(err_low, 10 * err_full);
}

BOOST_AUTO_TEST_SUITE_END()
