// K/V caches on the sequence pipelines: prefix_kv (mdlm) and rolling_kv (video). What each
// must show: the exact settings reproduce the uncached run bit for bit; the approximate ones
// compute fewer rows (FLOPs count what ran) and log their hit rate.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/kv_cache.h"
#include "caches/none.h"
#include "framework/runner.h"
#include "models/mdlm_pipeline.h"
#include "models/samplers.h"
#include "models/tiny_mdlm.h"
#include "models/tiny_video.h"
#include "models/video_pipeline.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

Trajectory run_seq(Backbone& bb, const Pipeline& pipe, Ops* ops, const RunOptions& run, const ReferenceTrace* ref,
                   ReferenceTrace* capture) {
  NoCache none{NoCacheOptions{}};
  RunParts parts;
  parts.backbone = &bb;
  parts.pipeline = &pipe;
  parts.layers = {&none};
  parts.ops = ops;
  return run_trajectory(parts, run, ref, capture);
}

int extra_id(const Trajectory& t, const std::string& name) {
  for (size_t i = 0; i < t.extras.size(); ++i)
    if (t.extras[i].name == name) return int(i);
  return -1;
}

// ---- masked-diffusion LM: prompt 8 + 24 generated tokens, blocks of 8, 4 steps per block.
struct MdlmFixture {
  TinyMdlm model{[] {
    TinyMdlmOptions o;
    o.hidden_size = 32;
    o.max_length = 32;
    return o;
  }()};
  MdlmPipelineOptions po = [] {
    MdlmPipelineOptions o;
    o.prompt_length = 8;
    o.gen_length = 24;
    o.block_length = 8;
    o.steps_per_block = 4;
    return o;
  }();
  MdlmPipeline pipe{po};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  MdlmFixture() {
    run.samples = 3;
    run.batch = 3;
    run.cfg_scale = 1;
    run.probe_samples = 3;
    ref_traj = run_seq(model, pipe, nullptr, run, nullptr, &ref);
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(mdlm_prefix_kv, MdlmFixture)

BOOST_AUTO_TEST_CASE(decoding_unmasks_exactly_gen_length_tokens) {
  const int64_t mask = model.mask_id();
  BOOST_REQUIRE(ref.samples.sizes() == at::IntArrayRef({3, 32}));
  BOOST_CHECK_EQUAL(ref.samples.scalar_type(), at::kLong);
  BOOST_CHECK_EQUAL(ref.samples.eq(mask).sum().item<int64_t>(), 0);
  BOOST_CHECK(ref.samples.lt(32).all().item<bool>() && ref.samples.ge(0).all().item<bool>());
  // Step by step (batch 0): 2 tokens per step, only inside the current block, prompt untouched.
  at::Tensor prev;
  for (int i = 0; i < 12; ++i) {
    const auto& x = ref.x_after_step[size_t(i)];
    const int block = i / 4;
    BOOST_CHECK_EQUAL(x.eq(mask).sum().item<int64_t>(), 3 * (24 - 2 * (i + 1)));
    for (int b = 0; b < 3; ++b) {
      BOOST_CHECK_EQUAL(x[b].narrow(0, 8 + 8 * block, 8).eq(mask).sum().item<int64_t>(), 8 - 2 * (i % 4 + 1));
      if (block < 2) BOOST_CHECK(x[b].narrow(0, 16 + 8 * block, 32 - 16 - 8 * block).eq(mask).all().item<bool>());
    }
    if (prev.defined()) {
      BOOST_CHECK(at::equal(x.narrow(1, 0, 8), prev.narrow(1, 0, 8)));
      // Decoded tokens stay decoded.
      auto kept = prev.ne(mask);
      BOOST_CHECK(at::equal(x.masked_select(kept), prev.masked_select(kept)));
    }
    prev = x;
    BOOST_CHECK_EQUAL(ref_traj.steps[size_t(i)].t, int64_t(std::lround(1000.0 * (24 - 2 * i) / 24)));
  }
}

BOOST_AUTO_TEST_CASE(refresh_every_step_is_bitwise_the_uncached_run) {
  PrefixKvOptions o;
  o.refresh = 1;
  PrefixKvCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
  const int hit = extra_id(t, "kv_hit_rate");
  BOOST_REQUIRE_GE(hit, 0);
  const int attn = find_site(model.sites(), "layers.1.attn");
  for (auto& s : t.steps) {
    BOOST_CHECK_EQUAL(s.err_ref_rel_l1, 0.0);
    BOOST_CHECK_EQUAL(s.err_ref[TinyMdlm::kSiteModel], 0.0);  // the logits, bit for bit
    BOOST_CHECK_EQUAL(s.site_extra[size_t(hit)][size_t(attn)], 0.0);  // nothing came from the cache
  }
}

BOOST_AUTO_TEST_CASE(reuse_within_a_block_computes_fewer_rows_and_logs_the_hit_rate) {
  PrefixKvCache cache{PrefixKvOptions{}};  // recompute at a block's first step only
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  // FLOPs of what ran: at a block's first step all L = 32 positions, else the block and
  // suffix after the context; keys are always all 32; logits only after the context.
  const double D = 32, M = 128, V = 32, L = 32, depth = 2;
  double want = 0;
  for (int i = 0; i < 12; ++i) {
    const double ctx = 8 + 8 * (i / 4), R = i % 4 == 0 ? L : L - ctx;
    want += depth * (2 * R * D * 3 * D + 4 * R * L * D + 2 * R * D * D + 4 * R * D * M) + 2 * (L - ctx) * D * V;
  }
  BOOST_CHECK_CLOSE(t.flops, 3 * want, 1e-9);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_TEST_MESSAGE("prefix_kv FLOPs / uncached: " << t.flops / ref_traj.flops);
  const int hit = extra_id(t, "kv_hit_rate");
  BOOST_REQUIRE_GE(hit, 0);
  for (int layer = 0; layer < 2; ++layer) {
    const int attn = find_site(model.sites(), "layers." + std::to_string(layer) + ".attn");
    for (int i = 0; i < 12; ++i) {
      const double h = t.steps[size_t(i)].site_extra[size_t(hit)][size_t(attn)];
      if (i % 4 == 0) {
        BOOST_CHECK_EQUAL(h, 0.0);
      } else {
        BOOST_CHECK_CLOSE(h, (8.0 + 8 * (i / 4)) / 32.0, 1e-12);  // the prefix of the 32 keys
        BOOST_CHECK(h > 0 && h <= 1);
      }
    }
  }
  // Every token is still decoded; the stale prefix may change some of them.
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_CHECK(at::equal(t.samples.narrow(1, 0, 8), ref.samples.narrow(1, 0, 8)));
  BOOST_TEST_MESSAGE("prefix_kv tokens differing from the uncached run: "
                     << t.samples.ne(ref.samples).sum().item<int64_t>() << " of " << 3 * 24);
}

BOOST_AUTO_TEST_CASE(refresh_interval_recomputes_inside_the_block) {
  PrefixKvOptions o;
  o.refresh = 2;
  PrefixKvCache cache(o);
  auto t = run_seq(model, pipe, &cache, run, &ref, nullptr);
  PrefixKvCache block_only{PrefixKvOptions{}};
  auto b = run_seq(model, pipe, &block_only, run, &ref, nullptr);
  const int hit = extra_id(t, "kv_hit_rate"), attn = find_site(model.sites(), "layers.0.attn");
  for (int i = 0; i < 12; ++i)
    BOOST_CHECK_EQUAL(t.steps[size_t(i)].site_extra[size_t(hit)][size_t(attn)] == 0.0, i % 2 == 0);
  BOOST_CHECK_GT(t.flops, b.flops);
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(rolling_kv_is_refused_by_the_bidirectional_model) {
  RollingKvCache rolling{RollingKvOptions{}};
  cachelab::testing::check_error([&] { run_seq(model, pipe, &rolling, run, &ref, nullptr); }, {"bidirectional"});
}

BOOST_AUTO_TEST_SUITE_END()

namespace {

// ---- AR video: 3 chunks of 2 frames of 1x8x8, 3 DDIM steps per chunk (the pipeline's own).
struct VideoFixture {
  TinyVideo model{TinyVideoOptions{}};
  VideoPipeline pipe{[] {
    VideoPipelineOptions o;
    o.num_chunks = 3;
    o.frames_per_chunk = 2;
    o.steps = 3;
    return o;
  }()};
  RunOptions run;
  ReferenceTrace ref;
  Trajectory ref_traj;
  VideoFixture() {
    run.samples = 2;
    run.batch = 2;
    run.cfg_scale = 1;
    run.probe_samples = 2;
    ref_traj = run_seq(model, pipe, nullptr, run, nullptr, &ref);
  }
  Trajectory with_window(int w) {
    RollingKvOptions o;
    o.window = w;
    RollingKvCache cache(o);
    return run_seq(model, pipe, &cache, run, &ref, nullptr);
  }
};

}  // namespace

BOOST_FIXTURE_TEST_SUITE(video_rolling_kv, VideoFixture)

BOOST_AUTO_TEST_CASE(uncached_video_has_all_frames_and_recomputes_the_past) {
  BOOST_REQUIRE(ref.samples.sizes() == at::IntArrayRef({2, 6, 1, 8, 8}));
  BOOST_CHECK(at::isfinite(ref.samples).all().item<bool>());
  BOOST_REQUIRE_EQUAL(ref_traj.steps.size(), size_t(9));
  // FLOPs per step grow with the chunk: every past frame is recomputed.
  BOOST_CHECK_LT(ref_traj.steps[1].flops, ref_traj.steps[4].flops);
  BOOST_CHECK_LT(ref_traj.steps[4].flops, ref_traj.steps[7].flops);
  // Finished chunks stay as they were.
  BOOST_CHECK(at::equal(ref.x_after_step[2], ref.samples.narrow(1, 0, 2)));
}

BOOST_AUTO_TEST_CASE(a_window_as_long_as_the_video_is_bitwise_full_attention) {
  for (int w : {6, 100}) {
    auto t = with_window(w);
    BOOST_CHECK_MESSAGE(at::equal(t.samples, ref.samples), "window " << w);
    for (auto& s : t.steps) BOOST_CHECK_EQUAL(s.err_ref_rel_l1, 0.0);
    BOOST_CHECK_LT(t.flops, ref_traj.flops);
    BOOST_TEST_MESSAGE("rolling_kv window " << w << " FLOPs / full recompute: " << t.flops / ref_traj.flops);
  }
}

BOOST_AUTO_TEST_CASE(flops_count_the_frames_computed_and_the_keys_attended) {
  const int w = 1;
  auto t = with_window(w);
  auto u = with_window(6);
  const double P = 16;
  double want = 0, want_full = 0, want_ref = 0;
  for (int c = 0; c < 3; ++c)
    for (int s = 0; s < 3; ++s) {
      const int ctx = 2 * c, F = ctx + 2, S = s == 0 ? std::max(0, ctx - 2) : ctx;
      auto step = [&](int start, int window) {
        double f_attn = 0;
        for (int f = start; f < F; ++f) f_attn += model.attn_frame_flops(P * (f - (window >= 0 ? std::max(0, f - window) : 0) + 1));
        return model.model_flops(F - start, F - ctx, start < ctx ? 2 : 1) +
               2 * (f_attn + (F - start) * model.mlp_frame_flops());
      };
      want += step(S, w);
      want_full += step(S, -1);
      want_ref += step(0, -1);
    }
  BOOST_CHECK_CLOSE(t.flops, 2 * want, 1e-9);
  BOOST_CHECK_CLOSE(u.flops, 2 * want_full, 1e-9);
  BOOST_CHECK_CLOSE(ref_traj.flops, 2 * want_ref, 1e-9);
}

BOOST_AUTO_TEST_CASE(a_shorter_window_differs_finitely_with_fewer_flops) {
  auto full = with_window(6);
  auto t = with_window(1);
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
  BOOST_CHECK(!at::equal(t.samples, ref.samples));
  // The first two chunks see at most one frame back from their own ... chunk 0 is identical.
  BOOST_CHECK(at::equal(t.samples.narrow(1, 0, 2), ref.samples.narrow(1, 0, 2)));
  BOOST_CHECK_LT(t.flops, full.flops);
  const double err = t.steps.back().err_ref_rel_l1;
  BOOST_CHECK(std::isfinite(err) && err > 0);
  BOOST_TEST_MESSAGE("rolling_kv window 1: FLOPs / window 6 = " << t.flops / full.flops << ", final rel L1 " << err);
}

BOOST_AUTO_TEST_CASE(hit_rate_is_the_share_of_cached_keys) {
  auto t = with_window(6);
  const int hit = extra_id(t, "kv_hit_rate"), attn = find_site(model.sites(), "layers.0.attn");
  BOOST_REQUIRE_GE(hit, 0);
  for (int c = 0; c < 3; ++c)
    for (int s = 0; s < 3; ++s) {
      const int ctx = 2 * c, F = ctx + 2, S = s == 0 ? std::max(0, ctx - 2) : ctx;
      double served = 0, seen = 0;
      for (int f = S; f < F; ++f) served += S, seen += f + 1;
      const double h = t.steps[size_t(3 * c + s)].site_extra[size_t(hit)][size_t(attn)];
      BOOST_CHECK_CLOSE(h, served / seen, 1e-12);
      BOOST_CHECK(h >= 0 && h <= 1);
      if (c > 0 && s > 0) BOOST_CHECK_GT(h, 0.0);
    }
}

BOOST_AUTO_TEST_CASE(the_runs_sampler_sets_the_schedule) {
  DdimOptions d;
  d.steps = 2;
  DdimSampler sampler(d);
  NoCache none{NoCacheOptions{}};
  RunParts parts;
  parts.backbone = &model;
  parts.pipeline = &pipe;
  parts.sampler = &sampler;
  parts.layers = {&none};
  auto t = run_trajectory(parts, run, nullptr, nullptr);
  BOOST_REQUIRE_EQUAL(t.steps.size(), size_t(6));
  BOOST_CHECK_EQUAL(t.steps[0].t, sampler.timesteps()[0]);
  BOOST_CHECK_EQUAL(t.steps[3].t, sampler.timesteps()[1]);
  BOOST_CHECK(at::isfinite(t.samples).all().item<bool>());
}

BOOST_AUTO_TEST_SUITE_END()
