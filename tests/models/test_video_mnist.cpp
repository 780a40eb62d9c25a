// Moving MNIST (the generator), rollouts conditioned on its test videos (the video pipeline's
// data), the video_quality metric and its judge procedure, and the video trainer's loss.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>

#include "caches/kv_cache.h"
#include "framework/paths.h"
#include "metrics/video.h"
#include "models/lenet.h"
#include "models/moving_mnist.h"
#include "models/tiny_video.h"
#include "models/train_video.h"
#include "models/video_pipeline.h"
#include "tests/caches/mdlm_fixture.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

const MovingMnist& test_split() {
  static const MovingMnist data(MovingMnistOptions{}, default_data_dir(), "test");
  return data;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(moving_mnist)

BOOST_AUTO_TEST_CASE(videos_are_reproducible_bounce_and_stay_on_the_canvas) {
  const auto& data = test_split();
  auto a = data.videos(5, 8, 24), b = data.videos(5, 8, 24), other = data.videos(5, 8, 24, /*seed_offset=*/1);
  BOOST_CHECK(at::equal(a.frames, b.frames) && at::equal(a.positions, b.positions));
  BOOST_CHECK(!at::equal(a.frames, other.frames));
  BOOST_CHECK(at::equal(data.videos(6, 1, 24).frames[0], a.frames[1]));  // video i is video i in any request
  BOOST_REQUIRE(a.frames.sizes() == at::IntArrayRef({8, 24, 1, 32, 32}));
  BOOST_CHECK_EQUAL(a.frames.min().item<float>(), -1.0f);
  BOOST_CHECK_LE(a.frames.max().item<float>(), 1.0f);
  const auto pos = a.positions.to(at::kDouble);  // [N, F, 1, 2]
  BOOST_CHECK_GE(pos.min().item<double>(), 0.0);
  BOOST_CHECK_LE(pos.max().item<double>(), 32.0 - 14.0);
  // Constant speed 2 px/frame (rounded positions: one pixel of slack) and bounces off the walls.
  auto step = (pos.narrow(1, 1, 23) - pos.narrow(1, 0, 23));
  BOOST_CHECK_LE(step.abs().max().item<double>(), 3.0);
  auto turned = (step.narrow(1, 1, 22) * step.narrow(1, 0, 22) < 0).any().item<bool>();
  BOOST_CHECK(turned);
  // Every frame shows the digit at its position (ink only there).
  for (int64_t f : {0, 11, 23}) {
    const int64_t y = a.positions[0][f][0][0].item<int64_t>(), x = a.positions[0][f][0][1].item<int64_t>();
    auto frame = a.frames[0][f][0];
    const double inside = frame.narrow(0, y, 14).narrow(1, x, 14).add(1).sum().item<double>();
    BOOST_CHECK_GT(inside, 10.0);
    BOOST_CHECK_CLOSE(frame.add(1).sum().item<double>(), inside, 1e-4);
  }
}

BOOST_AUTO_TEST_CASE(two_digits_combine_by_maximum) {
  MovingMnistOptions o;
  o.num_digits = 2;
  const MovingMnist data(o, default_data_dir(), "test");
  auto v = data.videos(0, 4, 6);
  BOOST_CHECK(v.labels.sizes() == at::IntArrayRef({4, 2}));
  BOOST_CHECK(v.positions.sizes() == at::IntArrayRef({4, 6, 2, 2}));
  MovingMnistOptions bad;
  bad.digit_size = 40;
  cachelab::testing::check_error([&] { MovingMnist(bad, default_data_dir(), "test"); }, {"digit_size", "canvas"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(video_quality)

// The identity floor rests on this: the judge, on the digit cropped around its centre of
// mass, names the ground-truth digit of Moving MNIST frames (bouncing, resized 28 -> 14 -> 28).
BOOST_AUTO_TEST_CASE(the_judge_reads_ground_truth_frames) {
  Judge judge{LenetJudgeOptions{}};
  auto v = test_split().videos(0, 64, 4);
  auto frames = v.frames.reshape({256, 1, 32, 32});
  auto cls = judge.logits(crop_digits(frames, 14)).argmax(1).reshape({64, 4});
  const double acc = cls.eq(v.labels).to(at::kDouble).mean().item<double>();
  BOOST_TEST_MESSAGE("judge on ground-truth Moving MNIST frames: " << acc);
  BOOST_CHECK_GE(acc, 0.95);
}

BOOST_AUTO_TEST_CASE(ground_truth_keeps_its_identity_and_a_blank_rollout_does_not) {
  Judge judge{LenetJudgeOptions{}};
  auto v = test_split().videos(0, 16, 10);
  VideoQualityOptions o;
  o.cond_frames = 2;
  o.last = 4;
  o.per_frame = true;
  VideoQualityMetric metric(o);
  MetricInputs in;
  in.samples = v.frames;
  in.reference = v.frames;
  in.truth = v.frames;
  in.labels = v.labels.select(1, 0);
  in.judge = &judge;
  std::map<std::string, double> m;
  for (auto& [k, x] : metric.compute(in)) m[k] = x;
  BOOST_CHECK(std::isinf(m.at("psnr_gt")) && std::isinf(m.at("psnr_ref_last")) && std::isinf(m.at("psnr_gt_f009")));
  BOOST_TEST_MESSAGE("ground truth: identity " << m.at("identity") << ", identity_label " << m.at("identity_label"));
  BOOST_CHECK_GE(m.at("identity"), 0.9);
  BOOST_CHECK(m.count("identity_f002") && !m.count("identity_f001"));
  // Blank frames after the given ones: low PSNR against the truth, identity lost.
  auto blank = v.frames.clone();
  blank.narrow(1, 2, 8).fill_(-1.0);
  in.samples = blank;
  m.clear();
  for (auto& [k, x] : metric.compute(in)) m[k] = x;
  BOOST_TEST_MESSAGE("blank rollout: psnr_gt " << m.at("psnr_gt") << " dB, identity " << m.at("identity"));
  BOOST_CHECK_LT(m.at("psnr_gt"), 20.0);
  BOOST_CHECK_LT(m.at("identity"), 0.5);
  o.cond_frames = 3;  // frame 2 was generated (blank): not the truth
  cachelab::testing::check_error([&] { VideoQualityMetric(o).compute(in); }, {"cond_frames", "differ"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(video_rollouts)

TinyVideoOptions video32() {
  TinyVideoOptions o;
  o.frame_size = 32;
  o.patch_size = 8;
  o.hidden_size = 32;
  o.chunk_frames = 2;
  o.frame_position = "rope";
  o.max_frames = 64;
  return o;
}

// The rollout continues the data video: it starts with the given frames, and an exact K/V
// cache (rolling_kv, window as long as the video) is bitwise the recomputing run even when
// the context is non-empty from the first chunk on.
BOOST_AUTO_TEST_CASE(conditioned_rollouts_start_with_the_given_frames) {
  TinyVideo model(video32());
  VideoPipelineOptions po;
  po.data = "moving_mnist";
  po.cond_frames = 2;
  po.num_chunks = 3;
  po.steps = 2;
  VideoPipeline pipe(po);
  BOOST_CHECK_EQUAL(pipe.frames_per_sample(), 6);
  RunOptions run;
  run.samples = run.batch = 2;
  run.cfg_scale = 1;
  ReferenceTrace ref;
  auto full = cachelab::testing::run_seq(model, pipe, nullptr, run, nullptr, &ref);
  BOOST_REQUIRE(full.samples.sizes() == at::IntArrayRef({2, 8, 1, 32, 32}));
  BOOST_REQUIRE(full.truth.defined());
  BOOST_CHECK(at::equal(full.samples.narrow(1, 0, 2), full.truth.narrow(1, 0, 2)));
  BOOST_CHECK(!at::equal(full.samples.narrow(1, 2, 6), full.truth.narrow(1, 2, 6)));
  BOOST_CHECK(at::equal(full.labels, test_split().videos(0, 2, 8).labels.select(1, 0)));
  RollingKvOptions ko;
  ko.window = 1000;
  RollingKvCache cache(ko);
  auto cached = cachelab::testing::run_seq(model, pipe, &cache, run, &ref, nullptr);
  BOOST_CHECK(at::equal(cached.samples, full.samples));
  BOOST_CHECK_LT(cached.flops, full.flops);
  po.cond_frames = 0;
  cachelab::testing::check_error([&] { VideoPipeline{po}; }, {"cond_frames", ">= 1"});
}

// Teacher forcing on the flow objective: the loss is the velocity MSE of the noisy chunks, it
// trains (a few steps on one batch lower it) and the conditioning frames carry no loss.
BOOST_AUTO_TEST_CASE(the_flow_loss_trains) {
  TinyVideo model(video32());
  auto clips = test_split().videos(0, 4, 6).frames;
  auto gen = at::detail::createCPUGenerator(3);
  std::vector<at::Tensor> params = model.trainable_parameters();
  auto first = video_loss(model, clips, 2, "flow", 1000, gen).mean();
  BOOST_CHECK_EQUAL(video_loss(model, clips, 2, "eps", 1000, gen).size(0), 4);
  double last = first.item<double>();
  for (int i = 0; i < 30; ++i) {
    auto g2 = at::detail::createCPUGenerator(3);  // the same noise every step
    auto loss = video_loss(model, clips, 2, "flow", 1000, g2).mean();
    for (auto& p : params) p.mutable_grad() = at::Tensor();
    loss.backward();
    for (auto& p : params) p.data().add_(p.grad(), -0.02);
    last = loss.item<double>();
  }
  BOOST_TEST_MESSAGE("flow loss " << first.item<double>() << " -> " << last << " after 30 SGD steps on one batch");
  BOOST_CHECK_LT(last, 0.8 * first.item<double>());
  cachelab::testing::check_error([&] { video_loss(model, clips, 2, "v", 1000, gen); }, {"objective", "flow"});
}

BOOST_AUTO_TEST_SUITE_END()
