// W8A8 on a small random DiT: weight and activation quantization error bounds, calibration
// records the true min-max, fake and real int8 agree (static and dynamic activations),
// dynamic needs no calibration file, unselected linears are untouched, the per-linear error
// extra is logged (or not), a missing or stale calibration file is a clear error, options
// are checked and round-trip.
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <cmath>
#include <filesystem>
#include <limits>

#include "caches/none.h"
#include "framework/config.h"
#include "framework/registries.h"
#include "framework/runner.h"
#include "framework/safetensors.h"
#include "models/samplers.h"
#include "quant/w8a8.h"
#include "tests/caches/fixture.h"
#include "tests/quant/quant_util.h"

using namespace cachelab;
using cachelab::testing::linear_id;
using cachelab::testing::MinMaxOps;
using cachelab::testing::OpsHooks;
using cachelab::testing::rel_l2;

namespace {

struct W8a8Fixture : cachelab::testing::Fixture {
  cachelab::testing::TempDir dir;
  NoCache none{NoCacheOptions{}};
  W8A8Options options(const std::string& mode, const std::string& file = "calib.safetensors",
                      const std::string& activations = "static") const {
    W8A8Options o;
    o.mode = mode;
    o.activations = activations;
    o.calibration = dir.path + "/" + file;
    return o;
  }
  Trajectory with(Ops& ops, const RunOptions* r = nullptr) {
    return cachelab::testing::run_image(model, sampler, {&none}, r ? *r : run, &ref, nullptr, &ops);
  }
  // What `cachelab calibrate` does: observe one trajectory, then save.
  Trajectory calibrate(W8A8Ops& ops, std::string* summary = nullptr) {
    ops.calibrator()->start_calibration();
    auto t = with(ops);
    const std::string s = ops.calibrator()->finish_calibration();
    if (summary) *summary = s;
    return t;
  }
  at::Tensor forward(Ops& ops, int64_t seed = 7) {
    c10::InferenceMode guard;  // as the runner runs
    auto gen = at::detail::createCPUGenerator(uint64_t(seed));
    auto x = at::randn({4, 1, 8, 8}, gen);
    auto t = at::full({4}, 500.0);
    ops.begin_run(model.linears(), nullptr);
    OpsHooks hooks(ops);
    return model.forward(x, t, cachelab::testing::labels(at::arange(4, at::kLong)), hooks);
  }
};

}  // namespace

BOOST_AUTO_TEST_SUITE(w8a8_quantization)

BOOST_AUTO_TEST_CASE(per_channel_weight_error_is_at_most_half_a_step_per_element) {
  auto gen = at::detail::createCPUGenerator(3);
  // Rows with very different magnitudes (per-channel scales matter) and an all-zero row.
  auto w = at::randn({48, 32}, gen) * at::logspace(-3, 1, 48).unsqueeze(1);
  w[5].zero_();
  auto q = quantize_weight(w);
  auto deq = dequantize_weight(q);
  BOOST_CHECK(q.q.scalar_type() == at::kChar);
  BOOST_CHECK_EQUAL(q.q.abs().max().item<int>(), 127);
  BOOST_CHECK_EQUAL(deq.select(0, 5).abs().max().item<double>(), 0.0);
  for (int64_t r = 0; r < w.size(0); ++r) {
    const double s = q.scale[r].item<double>();
    if (r != 5) {
      BOOST_CHECK_CLOSE(s, w[r].abs().max().item<double>() / 127, 1e-4);
      BOOST_CHECK_EQUAL(q.q[r].abs().max().item<int>(), 127);  // the row's absmax maps to +-127
    }
    // |w - q s| <= s/2, up to float rounding of the division and product (2^-20 relative).
    const double worst = (w[r] - deq[r]).abs().max().item<double>();
    BOOST_CHECK_MESSAGE(worst <= s / 2 * (1 + 1e-6) + 1e-6 * s, "row " << r << ": " << worst << " > " << s / 2);
  }
}

BOOST_AUTO_TEST_CASE(activation_fake_quant_is_bounded_by_half_a_step) {
  auto gen = at::detail::createCPUGenerator(4);
  auto x = at::randn({256, 96}, gen) * 3 + 1;
  for (bool reduce : {true, false}) {
    const ActQuant a = act_quant(-2.5f, 6.0f, reduce);
    BOOST_CHECK_EQUAL(a.qmax, reduce ? 127 : 255);
    BOOST_CHECK_CLOSE(a.scale, 8.5 / a.qmax, 1e-4);
    auto fq = fake_quantize(x, a);
    // Inside the range, at most half a step (+ float rounding); outside, clamped.
    auto in = (x >= a.lo) & (x <= a.hi);
    const double worst_in = ((fq - x).abs() * in).max().item<double>();
    BOOST_CHECK_LE(worst_in, a.scale / 2 * (1 + 1e-5));
    BOOST_CHECK_LE(fq.max().item<double>(), a.hi + a.scale / 2);
    BOOST_CHECK_GE(fq.min().item<double>(), a.lo - a.scale / 2);
    // PyTorch's fake quantizer (which rounds before adding the zero point) differs only at
    // rare rounding ties, by exactly one step.
    auto theirs = at::fake_quantize_per_tensor_affine(at::clamp(x, a.lo, a.hi), a.scale, a.zero_point, 0, a.qmax);
    auto diff = (fq - theirs).abs();
    const int64_t n = (diff > 0).sum().item<int64_t>();
    BOOST_CHECK_LT(n, x.numel() / 1000);
    if (n > 0) BOOST_CHECK_CLOSE(diff.max().item<double>(), a.scale, 1e-3);
  }
  // A range without 0 is widened to include it (0 stays exact).
  const ActQuant pos = act_quant(1.0f, 3.0f, true);
  BOOST_CHECK_EQUAL(pos.lo, 0.0f);
  BOOST_CHECK_EQUAL(fake_quantize(at::zeros({3}), pos).abs().max().item<double>(), 0.0);
}

BOOST_FIXTURE_TEST_CASE(calibration_records_every_linears_min_max_over_all_steps_in_fp32, W8a8Fixture) {
  W8A8Ops ops(options("fake"));
  BOOST_REQUIRE(ops.calibrator() == &ops);
  std::string summary;
  auto t = calibrate(ops, &summary);
  BOOST_TEST_MESSAGE(summary);
  BOOST_CHECK(summary.find(ops.calibration_path()) != std::string::npos);
  // Observing computes in full precision: the trajectory is the reference, bit for bit.
  BOOST_CHECK(at::equal(t.samples, ref.samples));
  // The file holds exactly the min and max an independent observer sees on the same run.
  MinMaxOps seen;
  with(seen);
  auto f = read_safetensors(ops.calibration_path());
  const auto& linears = model.linears();
  BOOST_CHECK_EQUAL(f.tensors.size(), 2 * linears.size());
  for (auto& [name, tensor] : f.tensors) {
    const std::string suffix = ".input_range";
    if (name.size() < suffix.size() || name.compare(name.size() - suffix.size(), suffix.size(), suffix) != 0) continue;
    const int id = linear_id(model, name.substr(0, name.size() - suffix.size()));
    BOOST_CHECK_EQUAL(tensor[0].item<float>(), float(seen.lo[size_t(id)]));
    BOOST_CHECK_EQUAL(tensor[1].item<float>(), float(seen.hi[size_t(id)]));
    BOOST_CHECK_LT(seen.lo[size_t(id)], seen.hi[size_t(id)]);
  }
}

BOOST_FIXTURE_TEST_CASE(fake_rounds_every_input_as_the_int8_kernel_does, W8a8Fixture) {
  W8A8Ops fake(options("fake"));
  calibrate(fake);
  W8A8Ops int8(options("int8"));
  c10::InferenceMode guard;
  fake.begin_run(model.linears(), nullptr);
  int8.begin_run(model.linears(), nullptr);
  // Many rows per linear (about 1 in 10^5 inputs lies at a rounding tie where the order
  // of operations matters: rounding before adding the zero point made several rows here
  // differ by a whole step). Agreement within float rounding means every quantized input
  // is the same; one differing input would move its row by scale_x * |w| (~1e-3 of the
  // output's range here, measured), 100x the tolerance.
  auto gen = at::detail::createCPUGenerator(6);
  double worst = 0;
  for (size_t id = 0; id < model.linears().size(); ++id) {
    if (!fake.selected()[id]) continue;
    const auto& w = model.linears()[id].weight;
    auto x = at::randn({64, 256, w.size(1)}, gen) * 1.5;
    auto yf = fake.linear(int(id), x), yi = int8.linear(int(id), x);
    const double d = ((yi - yf).abs().max() / yf.abs().max()).item<double>();
    BOOST_CHECK_MESSAGE(d < 1e-5, model.linears()[id].name << ": max |int8 - fake| / max |y| = " << d);
    worst = std::max(worst, d);
  }
  BOOST_TEST_MESSAGE("per linear, max |int8 - fake| / max |y|: " << worst);
}

BOOST_FIXTURE_TEST_CASE(calibrated_fake_and_real_int8_agree, W8a8Fixture) {
  W8A8Ops fake(options("fake"));
  calibrate(fake);
  W8A8Ops int8(options("int8"));  // loads the file fake just wrote
  // Per linear the two agree to float rounding (previous test). Through a network, that
  // float-level difference occasionally moves a later layer's input across a rounding
  // boundary (one step), and guided sampling compounds it: on dit-mnist (8 blocks) one
  // forward differed by 1.1e-3 and 50 guided steps by 6% (both modes ~27 dB from fp32).
  // On this model measured 1.1e-7 per forward and 1.8e-7 per trajectory (no boundary
  // crossed). Tolerances: 1e-4 per forward, 1e-3 per trajectory, room for a few crossings
  // on another CPU's rounding, still well below the quantization error itself (1.8e-3
  // and 5e-3 here, checked to be there).
  auto yf = forward(fake), yi = forward(int8);
  DenseOps dense;
  auto y32 = forward(dense);
  const double fake_vs_int8 = rel_l2(yi, yf), quant_err = rel_l2(yf, y32);
  BOOST_TEST_MESSAGE("forward: int8 vs fake rel L2 " << fake_vs_int8 << ", fake vs fp32 " << quant_err);
  BOOST_CHECK_LT(fake_vs_int8, 1e-4);
  BOOST_CHECK_GT(quant_err, 1e-3);  // quantization really happened
  BOOST_CHECK_LT(quant_err, 0.1);
  auto tf = with(fake), ti = with(int8);
  const double traj = rel_l2(ti.samples, tf.samples), traj_err = rel_l2(tf.samples, ref.samples);
  BOOST_TEST_MESSAGE("trajectory: int8 vs fake rel L2 " << traj << ", fake vs fp32 " << traj_err);
  BOOST_CHECK_LT(traj, 1e-3);
  BOOST_CHECK_GT(traj_err, 3e-3);
}

BOOST_FIXTURE_TEST_CASE(dynamic_fake_uses_the_int8_kernels_per_call_range, W8a8Fixture) {
  // No calibration file anywhere: dynamic reads none.
  W8A8Ops fake(options("fake", "nowhere/none.safetensors", "dynamic"));
  W8A8Ops int8(options("int8", "nowhere/none.safetensors", "dynamic"));
  BOOST_CHECK(fake.calibrator() == nullptr && int8.calibrator() == nullptr);
  c10::InferenceMode guard;
  fake.begin_run(model.linears(), nullptr);
  int8.begin_run(model.linears(), nullptr);
  DenseOps dense;
  dense.begin_run(model.linears(), nullptr);
  // Inputs at very different scales and offsets (one all positive, one all negative): a
  // per-call range follows each. Agreement within float rounding (as for static above)
  // means every input quantized to the same value, so fake took the kernel's range; the
  // relative error vs fp32 staying at the 7-bit level at every scale means the range is
  // the call's own (a fixed range would clamp the large inputs and flatten the small ones).
  auto gen = at::detail::createCPUGenerator(8);
  double worst = 0, worst_err = 0, best_err = 1;
  int k = 0;
  for (size_t id = 0; id < model.linears().size(); ++id) {
    if (!fake.selected()[id]) continue;
    const auto& w = model.linears()[id].weight;
    const double scale = std::pow(10.0, double(k % 5) - 2), offset = (k % 3 - 1) * 4.0 * scale;
    ++k;
    auto x = at::randn({16, 64, w.size(1)}, gen) * scale + offset;
    auto yf = fake.linear(int(id), x), yi = int8.linear(int(id), x), y32 = dense.linear(int(id), x);
    const double d = ((yi - yf).abs().max() / yf.abs().max()).item<double>();
    BOOST_CHECK_MESSAGE(d < 1e-5, model.linears()[id].name << " (x scale " << scale << ", offset " << offset
                                                           << "): max |int8 - fake| / max |y| = " << d);
    worst = std::max(worst, d);
    // The same values through the public helper: the kernel's range is x's min and max.
    const ActQuant a = dynamic_act_quant(x, /*reduce_range=*/true);
    BOOST_CHECK_EQUAL(a.lo, std::min(0.0f, x.min().item<float>()));
    BOOST_CHECK_EQUAL(a.hi, std::max(0.0f, x.max().item<float>()));
    const double err = rel_l2(yf, y32);
    worst_err = std::max(worst_err, err);
    best_err = std::min(best_err, err);
  }
  BOOST_TEST_MESSAGE("dynamic, per linear: max |int8 - fake| / max |y| " << worst << "; rel L2 vs fp32 in ["
                                                                         << best_err << ", " << worst_err << "]");
  BOOST_CHECK_GT(best_err, 1e-4);  // quantization happened
  BOOST_CHECK_LT(worst_err, 0.05);
}

BOOST_FIXTURE_TEST_CASE(dynamic_needs_no_calibration_file_and_its_trajectories_agree, W8a8Fixture) {
  W8A8Ops fake(options("fake", "nowhere/none.safetensors", "dynamic"));
  W8A8Ops int8(options("int8", "nowhere/none.safetensors", "dynamic"));
  auto tf = with(fake), ti = with(int8);
  BOOST_CHECK(!std::filesystem::exists(dir.path + "/nowhere"));
  // Tolerances as for static (calibrated_fake_and_real_int8_agree).
  const double traj = rel_l2(ti.samples, tf.samples), err = rel_l2(tf.samples, ref.samples);
  BOOST_TEST_MESSAGE("dynamic trajectory: int8 vs fake rel L2 " << traj << ", fake vs fp32 " << err);
  BOOST_CHECK_LT(traj, 1e-3);
  BOOST_CHECK_GT(err, 1e-3);
  BOOST_CHECK_LT(err, 0.1);
}

BOOST_FIXTURE_TEST_CASE(reduce_range_false_is_refused_where_the_int8_kernel_saturates, W8a8Fixture) {
  W8A8Options o = options("fake");
  o.reduce_range = false;
  W8A8Ops fake(o);
  calibrate(fake);
  o.mode = "int8";
  try {
    W8A8Ops int8(o);
    // A CPU with VNNI: full 8-bit activations must then agree with fake as closely as above.
    const double d = rel_l2(forward(int8), forward(fake));
    BOOST_TEST_MESSAGE("reduce_range false accepted; int8 vs fake rel L2 " << d);
    BOOST_CHECK_LT(d, 1e-5);
  } catch (const Error& e) {
    const std::string m = e.what();
    BOOST_TEST_MESSAGE("reduce_range false refused: " << m);
    BOOST_CHECK(m.find("saturated") != std::string::npos && m.find("reduce_range: true") != std::string::npos);
  }
}

BOOST_FIXTURE_TEST_CASE(unselected_linears_are_bitwise_untouched, W8a8Fixture) {
  W8A8Ops ops(options("fake"));
  calibrate(ops);
  c10::InferenceMode guard;
  ops.begin_run(model.linears(), nullptr);
  DenseOps dense;
  dense.begin_run(model.linears(), nullptr);
  // Default `blocks`: the embedder and final layer stay full precision, block linears don't.
  auto gen = at::detail::createCPUGenerator(5);
  for (const char* name : {"t_embedder.mlp.0", "t_embedder.mlp.2", "final_layer.linear", "final_layer.adaLN_modulation.1",
                           "blocks.2.mlp.fc1"}) {
    const int id = linear_id(model, name);
    const bool in_block = std::string(name).rfind("blocks.", 0) == 0;
    BOOST_CHECK_EQUAL(ops.selected()[size_t(id)], in_block);
    const auto& w = model.linears()[size_t(id)].weight;
    auto x = at::randn({4, 16, w.size(1)}, gen);
    const bool same = at::equal(ops.linear(id, x), dense.linear(id, x));
    BOOST_CHECK_MESSAGE(same != in_block, name << (in_block ? " was not quantized" : " was changed"));
  }
  // Name substrings select only those linears.
  W8A8Options o = options("fake");
  o.layers = {"mlp.fc1", "attn.proj"};
  W8A8Ops some(o);
  some.begin_run(model.linears(), nullptr);
  int n = 0;
  for (size_t i = 0; i < model.linears().size(); ++i) {
    const std::string& name = model.linears()[i].name;
    const bool want = name.find("mlp.fc1") != std::string::npos || name.find("attn.proj") != std::string::npos;
    BOOST_CHECK_EQUAL(some.selected()[i], want);
    n += want;
  }
  BOOST_CHECK_EQUAL(n, 2 * 4);
}

BOOST_FIXTURE_TEST_CASE(the_error_extra_is_finite_and_logged_per_quantized_linear, W8a8Fixture) {
  W8A8Ops cal(options("fake"));
  calibrate(cal);
  for (const char* mode : {"fake", "int8"}) {
    W8A8Ops ops(options(mode));
    auto t = with(ops);
    int e = -1;
    for (size_t i = 0; i < t.extras.size(); ++i)
      if (t.extras[i].name == "quant_err_rel" && t.extras[i].per_linear) e = int(i);
    BOOST_REQUIRE_MESSAGE(e >= 0, mode << ": quant_err_rel not declared");
    double worst = 0;
    for (auto& s : t.steps)
      for (size_t l = 0; l < model.linears().size(); ++l) {
        const double v = s.linear_extra[size_t(e)][l];
        if (ops.selected()[l]) {
          BOOST_CHECK_MESSAGE(std::isfinite(v) && v > 0, mode << " " << model.linears()[l].name << ": " << v);
          worst = std::max(worst, v);
        } else {
          BOOST_CHECK_MESSAGE(std::isnan(v), mode << " " << model.linears()[l].name << " logged " << v);
        }
      }
    // 8-bit weights and 7-bit activations: a few percent, far from the O(1) of a broken scale.
    BOOST_TEST_MESSAGE(mode << ": worst per-step linear error " << worst);
    BOOST_CHECK_LT(worst, 0.2);
  }
  // log_error: false declares nothing (and computes no fp32 linear); the samples are the same.
  W8A8Options o = options("int8");
  W8A8Ops logged(o);
  o.log_error = false;
  W8A8Ops quiet(o);
  auto tl = with(logged), tq = with(quiet);
  for (auto& e : tq.extras) BOOST_CHECK_MESSAGE(e.name != "quant_err_rel", "log_error: false logged " << e.name);
  BOOST_CHECK(at::equal(tl.samples, tq.samples));
}

BOOST_FIXTURE_TEST_CASE(a_missing_or_stale_calibration_file_is_a_clear_error, W8a8Fixture) {
  W8A8Ops missing(options("fake", "nowhere/none.safetensors"));
  cachelab::testing::check_error([&] { missing.begin_run(model.linears(), nullptr); },
                                 {"no calibration file at", dir.path + "/nowhere/none.safetensors",
                                  "cachelab calibrate EXP.yaml"});
  W8A8Ops cal(options("fake"));
  calibrate(cal);
  Dit other{cachelab::testing::tiny_dit_options()};
  cachelab::testing::randomize(other, /*seed=*/2);
  W8A8Ops stale(options("fake"));
  cachelab::testing::check_error([&] { stale.begin_run(other.linears(), nullptr); },
                                 {"calibrated with other weights", "cachelab calibrate"});
}

BOOST_AUTO_TEST_CASE(option_values_are_checked) {
  cachelab::testing::check_error(
      [] { ops_layers().resolve(parse_config_string("type: w8a8\nmode: int4\n", "exp.yaml")); },
      {"mode", "int4", "fake"});
  cachelab::testing::check_error(
      [] { ops_layers().resolve(parse_config_string("type: w8a8\nlayers: []\n", "exp.yaml")); }, {"layers"});
  auto node = ops_layers().resolve(parse_config_string("type: w8a8\nmode: int8\n", "exp.yaml"));
  BOOST_CHECK_EQUAL(node.find("calibration")->scalar, "results/calib/w8a8.safetensors");
  BOOST_CHECK_EQUAL(node.find("activations")->scalar, "static");
  cachelab::testing::check_error(
      [] { ops_layers().resolve(parse_config_string("type: w8a8\nactivations: runtime\n", "exp.yaml")); },
      {"activations", "runtime", "static", "dynamic"});
  // A calibration file is needed only for static activations.
  cachelab::testing::check_error(
      [] { ops_layers().resolve(parse_config_string("type: w8a8\ncalibration: ''\n", "exp.yaml")); },
      {"calibration", "activations: static"});
  ops_layers().resolve(parse_config_string("type: w8a8\nactivations: dynamic\ncalibration: ''\n", "exp.yaml"));
}

BOOST_AUTO_TEST_CASE(options_round_trip_through_the_config) {
  const std::string text = "type: w8a8\nmode: int8\nactivations: dynamic\nlog_error: false\nlayers: [attn, mlp]\n";
  ConfigNode first = ops_layers().resolve(parse_config_string(text, "exp.yaml"));
  const std::string yaml = to_yaml(first);
  ConfigNode again = ops_layers().resolve(parse_config_string(yaml, "resolved.yaml"));
  BOOST_CHECK_EQUAL(to_yaml(again), yaml);
  auto o = read_options<W8A8Options>(again, "ops `w8a8`");
  BOOST_CHECK_EQUAL(o.mode, "int8");
  BOOST_CHECK_EQUAL(o.activations, "dynamic");
  BOOST_CHECK_EQUAL(o.log_error, false);
  BOOST_CHECK_EQUAL(o.reduce_range, true);
  BOOST_CHECK(o.layers == std::vector<std::string>({"attn", "mlp"}));
}

BOOST_AUTO_TEST_SUITE_END()
