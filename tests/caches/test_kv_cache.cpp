// K/V caches on the sequence pipelines: prefix_kv, dual_kv, vicinity_kv, dkv_cache (mdlm) and rolling_kv (video). What each
// must show: the exact settings reproduce the uncached run bit for bit; the approximate ones
// compute fewer rows (FLOPs count what ran) and log their hit rate.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/kv_cache.h"
#include "caches/none.h"
#include "caches/seq_kv.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "models/mdlm_pipeline.h"
#include "models/samplers.h"
#include "models/tiny_mdlm.h"
#include "models/tiny_video.h"
#include "models/video_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/test_util.h"

using namespace cachelab;

using cachelab::testing::extra_id;
using cachelab::testing::MdlmFixture;
using cachelab::testing::run_seq;

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
  // suffix after the context; keys are always all 32; logits only for the block (8 rows).
  const double D = 32, M = 128, V = 32, L = 32, depth = 2;
  double want = 0;
  for (int i = 0; i < 12; ++i) {
    const double ctx = 8 + 8 * (i / 4), R = i % 4 == 0 ? L : L - ctx;
    want += depth * (2 * R * D * 3 * D + 4 * R * L * D + 2 * R * D * D + 4 * R * D * M) + 2 * 8 * D * V;
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

// dual_kv and dkv_cache: written against the sequence protocol (framework/ops.h) alone.
BOOST_FIXTURE_TEST_SUITE(mdlm_seq_kv, MdlmFixture)

double hit_at(const Trajectory& t, const Backbone& bb, int step, int layer) {
  const int hit = extra_id(t, "kv_hit_rate"), attn = find_site(bb.sites(), "layers." + std::to_string(layer) + ".attn");
  BOOST_REQUIRE_GE(hit, 0);
  return t.steps[size_t(step)].site_extra[size_t(hit)][size_t(attn)];
}

BOOST_AUTO_TEST_CASE(exact_settings_are_bitwise_the_uncached_run) {
  DualKvOptions d;
  d.refresh = 1;
  DualKvCache dual(d);
  DkvCacheOptions k;
  k.refresh = 1;
  DkvCache dkv(k);
  for (Ops* ops : std::vector<Ops*>{&dual, &dkv}) {
    auto t = run_seq(model, pipe, ops, run, &ref, nullptr);
    BOOST_CHECK(at::equal(t.samples, ref.samples));
    BOOST_CHECK_EQUAL(t.flops, ref_traj.flops);
    for (auto& s : t.steps) BOOST_CHECK_EQUAL(s.err_ref[TinyMdlm::kSiteModel], 0.0);  // logits, bit for bit
  }
}

BOOST_AUTO_TEST_CASE(dual_cache_computes_only_the_block_between_refreshes) {
  DualKvCache dual{DualKvOptions{}};
  auto t = run_seq(model, pipe, &dual, run, &ref, nullptr);
  // All 32 positions at a block's first step, else the block's 8; keys always all 32; logits of the block.
  const double D = 32, M = 128, V = 32, L = 32, depth = 2;
  double want = 0;
  for (int i = 0; i < 12; ++i) {
    const double R = i % 4 == 0 ? L : 8;
    want += depth * (2 * R * D * 3 * D + 4 * R * L * D + 2 * R * D * D + 4 * R * D * M) + 2 * 8 * D * V;
  }
  BOOST_CHECK_CLOSE(t.flops, 3 * want, 1e-9);
  for (int i = 0; i < 12; ++i)
    for (int layer = 0; layer < 2; ++layer) BOOST_CHECK_CLOSE(hit_at(t, model, i, layer), i % 4 == 0 ? 0.0 : 24.0 / 32, 1e-12);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_CHECK(at::equal(t.samples.narrow(1, 0, 8), ref.samples.narrow(1, 0, 8)));
  BOOST_TEST_MESSAGE("dual_kv FLOPs / uncached " << t.flops / ref_traj.flops << ", tokens differing "
                                                  << t.samples.ne(ref.samples).sum().item<int64_t>() << " of 72");
}

// Prompt 8 + 24 tokens in blocks of 8 (L = 32). With no vicinity the cache is dual_kv; with
// one covering the sequence it recomputes everything and is the uncached run; in between, a
// step computes the block and `before` / `after` positions around it (clipped to the sequence),
// and the hit rate is the share of the keys it did not compute.
BOOST_AUTO_TEST_CASE(vicinity_cache_computes_the_block_and_its_neighbours) {
  DualKvCache dual{DualKvOptions{}};
  auto d = run_seq(model, pipe, &dual, run, &ref, nullptr);
  VicinityKvOptions o;
  o.before = o.after = 0;
  VicinityKvCache none(o);
  auto v0 = run_seq(model, pipe, &none, run, &ref, nullptr);
  BOOST_CHECK(at::equal(v0.samples, d.samples));
  BOOST_CHECK_EQUAL(v0.flops, d.flops);
  o.before = o.after = 32;
  VicinityKvCache whole(o);
  auto vl = run_seq(model, pipe, &whole, run, &ref, nullptr);
  BOOST_CHECK(at::equal(vl.samples, ref.samples));
  for (auto& s : vl.steps) BOOST_CHECK_EQUAL(s.err_ref[TinyMdlm::kSiteModel], 0.0);
  o.before = 4;
  o.after = 6;
  VicinityKvCache near(o);
  auto vn = run_seq(model, pipe, &near, run, &ref, nullptr);
  for (int i = 0; i < 12; ++i) {
    const int block = i / 4;  // [8 + 8 block, 16 + 8 block), widened by 4 left and up to 6 right
    const double rows = 4 + 8 + std::min(6, 32 - (16 + 8 * block));
    for (int layer = 0; layer < 2; ++layer)
      BOOST_CHECK_CLOSE(hit_at(vn, model, i, layer), i % 4 == 0 ? 0.0 : (32 - rows) / 32, 1e-12);
  }
  BOOST_CHECK(vn.flops > d.flops && vn.flops < ref_traj.flops);
  BOOST_TEST_MESSAGE("vicinity_kv (4, 6): FLOPs / uncached " << vn.flops / ref_traj.flops << " (dual " << d.flops / ref_traj.flops
                     << "), tokens differing " << vn.samples.ne(ref.samples).sum().item<int64_t>() << " of 96 (dual "
                     << d.samples.ne(ref.samples).sum().item<int64_t>() << ")");
}

BOOST_AUTO_TEST_CASE(dkv_cache_keeps_a_token_one_step_after_it_is_decoded) {
  DkvCache dkv{DkvCacheOptions{}};  // refresh 4: full forwards at a block's steps 0 and 1
  auto t = run_seq(model, pipe, &dkv, run, &ref, nullptr);
  // 2 tokens per step. At step 2 of block b the store holds the prompt, the finished blocks and
  // the 2 tokens decoded at step 0 (kept by step 1's full forward); the 2 decoded at step 1 are
  // computed again. At step 3 those 2 are kept as well.
  for (int b = 0; b < 3; ++b) {
    const double done = 8 + 8 * b;
    for (int layer = 0; layer < 2; ++layer) {
      BOOST_CHECK_EQUAL(hit_at(t, model, 4 * b, layer), 0.0);
      BOOST_CHECK_EQUAL(hit_at(t, model, 4 * b + 1, layer), 0.0);
      BOOST_CHECK_CLOSE(hit_at(t, model, 4 * b + 2, layer), (done + 2) / 32, 1e-12);
      BOOST_CHECK_CLOSE(hit_at(t, model, 4 * b + 3, layer), (done + 4) / 32, 1e-12);
    }
  }
  // Drift at a block's step 1 (a full forward re-storing the positions kept at step 0, whose
  // tokens have not changed): layer 0's keys depend on the token and position only, so they
  // come back bit for bit; layer 1's attend to the 2 tokens decoded at step 0 and move.
  const int dk = extra_id(t, "kv_drift_k"), dv = extra_id(t, "kv_drift_v"), bytes = extra_id(t, "kv_bytes");
  BOOST_REQUIRE(dk >= 0 && dv >= 0 && bytes >= 0);
  const int a0 = find_site(model.sites(), "layers.0.attn"), a1 = find_site(model.sites(), "layers.1.attn");
  for (int b = 0; b < 3; ++b) {
    const auto& st = t.steps[size_t(4 * b + 1)];
    BOOST_CHECK_EQUAL(st.site_extra[size_t(dk)][size_t(a0)], 0.0);
    BOOST_CHECK_EQUAL(st.site_extra[size_t(dv)][size_t(a0)], 0.0);
    BOOST_CHECK_GT(st.site_extra[size_t(dk)][size_t(a1)], 1e-4);
    BOOST_TEST_MESSAGE("block " << b << " step 1, layer 1 K/V drift " << st.site_extra[size_t(dk)][size_t(a1)] << " / "
                                << st.site_extra[size_t(dv)][size_t(a1)]);
    // The store holds every position of each layer's keys and values: 3 x 4 heads x 32 x 8 x 2 floats.
    BOOST_CHECK_EQUAL(st.site_extra[size_t(bytes)][size_t(a0)], 3.0 * 4 * 32 * 8 * 2 * 4);
  }
  BOOST_CHECK(std::isnan(t.steps[0].site_extra[size_t(dk)][size_t(a1)]));  // nothing stored yet
  BOOST_CHECK_LT(t.flops, ref_traj.flops);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_TEST_MESSAGE("dkv_cache FLOPs / uncached " << t.flops / ref_traj.flops << ", tokens differing "
                                                    << t.samples.ne(ref.samples).sum().item<int64_t>() << " of 72");
}

BOOST_AUTO_TEST_CASE(window_diffusion_computes_the_nearest_masks_and_prunes_the_far_ones) {
  // One block of 24 (as the reference decodes), 12 steps of 2 tokens; phases of 4 steps.
  auto o = po;
  o.block_length = 24;
  o.steps_per_block = 12;
  MdlmPipeline one_block{o};
  ReferenceTrace uncached;
  auto ref1 = run_seq(model, one_block, nullptr, run, nullptr, &uncached);
  WindowDiffusionOptions exact;
  exact.refresh = 1;
  WindowDiffusionCache every_step(exact);
  auto e = run_seq(model, one_block, &every_step, run, &uncached, nullptr);
  BOOST_CHECK(at::equal(e.samples, uncached.samples));
  WindowDiffusionOptions w;
  w.refresh = 4;
  w.window = 8;
  w.active = 4;
  WindowDiffusionCache cache(w);
  auto t = run_seq(model, one_block, &cache, run, &uncached, nullptr);
  // A phase starting at step p (0, 4, 8) computes everything; its window is the prompt, the
  // 2 (p + 1) tokens decoded by then and the (up to) 8 nearest masks: 18, 26, 32 keys. Its
  // later steps compute the 4 nearest masks (fewer once fewer remain) and the tokens decoded
  // in the phase (those of step p only at step p + 1): 6, 6, 8 rows; 6, 6, 6 in the last
  // phase. The hit rate is the window's share not computed.
  const double D = 32, M = 128, V = 32, L = 32, depth = 2;
  const double rows[12] = {L, 6, 6, 8, L, 6, 6, 8, L, 6, 6, 6}, window[3] = {18, 26, 32};
  double want = 0;
  for (int i = 0; i < 12; ++i) {
    const double R = rows[i], W = window[i / 4];
    want += depth * (2 * R * D * 3 * D + 4 * R * L * D + 2 * R * D * D + 4 * R * D * M) + 2 * 24 * D * V;
    for (int layer = 0; layer < 2; ++layer)
      BOOST_CHECK_CLOSE(hit_at(t, model, i, layer), i % 4 == 0 ? 0.0 : (W - R) / W, 1e-12);
  }
  BOOST_CHECK_CLOSE(t.flops, 3 * want, 1e-9);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_TEST_MESSAGE("window_diffusion FLOPs / uncached " << t.flops / ref1.flops << " (attention counted over all keys), "
                     "tokens differing " << t.samples.ne(uncached.samples).sum().item<int64_t>() << " of 72");
}

BOOST_AUTO_TEST_CASE(threshold_decoding_finishes_blocks_early_without_forwards) {
  register_all();
  auto with_decoder = [&](const std::string& yaml) {
    auto o = po;
    o.decoder.node = read_options<MdlmPipelineOptions>(parse_config_string("decoder: " + yaml + "\n", "p.yaml"),
                                                       "pipeline `mdlm`").decoder.node;
    return o;
  };
  // A threshold nothing misses: every block is decoded at its first step.
  MdlmPipeline all_at_once{with_decoder("{type: threshold, threshold: 0.000001}")};
  auto t = run_seq(model, all_at_once, nullptr, run, nullptr, nullptr);
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  for (int i = 0; i < 12; ++i) BOOST_CHECK_EQUAL(t.steps[size_t(i)].flops > 0, i % 4 == 0);
  BOOST_CHECK_CLOSE(t.flops, ref_traj.flops / 4, 1e-9);
  // A threshold nothing reaches (random weights): one token per step, the rest at the block's last step.
  ReferenceTrace trace;
  MdlmPipeline one_by_one{with_decoder("{type: threshold, threshold: 1.0}")};
  run_seq(model, one_by_one, nullptr, run, nullptr, &trace);
  for (int i = 0; i < 12; ++i) {
    const int inner = i % 4, left_in_block = inner == 3 ? 0 : 8 - (inner + 1);
    const int later_blocks = 8 * (2 - i / 4);
    BOOST_CHECK_EQUAL(trace.x_after_step[size_t(i)].eq(model.mask_id()).sum().item<int64_t>(),
                      3 * (left_in_block + later_blocks));
  }
  // With the dual cache: still every token decoded, fewer FLOPs than without it.
  DualKvCache dual{DualKvOptions{}};
  auto td = run_seq(model, one_by_one, &dual, run, nullptr, nullptr);
  BOOST_CHECK_EQUAL(td.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
  BOOST_CHECK_LT(td.flops, ref_traj.flops);
}

BOOST_AUTO_TEST_CASE(unsupervised_cfg_decodes_from_the_guided_logits) {
  auto o = po;
  o.cfg_scale = 1.5;
  MdlmPipeline guided{o};
  ReferenceTrace trace;
  auto t = run_seq(model, guided, nullptr, run, nullptr, &trace);
  BOOST_CHECK_CLOSE(t.flops, 2 * ref_traj.flops, 1e-9);  // the doubled batch
  // Step 0 by hand: c from the sequence, u from it with the prompt masked, u + 2.5 (c - u).
  const auto& x0 = ref.x_after_step[0];  // batch 0 after the unguided first step: its prompt
  auto x = x0.clone();
  x.narrow(1, 8, 24).fill_(model.mask_id());
  auto un = x.clone();
  un.narrow(1, 0, 8).fill_(model.mask_id());
  PassThroughHooks hooks(model.linears());
  Cond cond;
  cond.context = 8;
  cond.block_end = 16;
  auto t0 = at::zeros({3});
  auto c = model.forward(x, t0, cond, hooks), u = model.forward(un, t0, cond, hooks);
  auto g = u + 2.5 * (c - u);
  auto conf = at::softmax(g.to(at::kDouble), -1).max(-1);
  auto pick = std::get<1>(std::get<0>(conf).topk(2, 1));
  auto want = x.narrow(1, 8, 8).scatter(1, pick, std::get<1>(conf).gather(1, pick));
  BOOST_CHECK(at::equal(trace.x_after_step[0].narrow(1, 8, 8), want));
  BOOST_CHECK(!at::equal(t.samples, ref.samples));  // guidance changes the decoding
  BOOST_CHECK_EQUAL(t.samples.eq(model.mask_id()).sum().item<int64_t>(), 0);
}

BOOST_AUTO_TEST_CASE(masked_lm_caches_refuse_causal_video) {
  DualKvCache dual{DualKvOptions{}};
  SeqForward f;
  f.batch = 1;
  f.length = 4;
  f.kind = SequenceKind::Causal;
  cachelab::testing::check_error([&] { dual.seq_begin(f); }, {"causal", "rolling_kv"});
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
