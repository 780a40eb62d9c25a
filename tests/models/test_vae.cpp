// The SD VAE decoder against the reference ldm Decoder (CompVis/stable-diffusion) on random
// weights, loaded from each of the three published layouts: committed fixtures regenerated
// by tools/fixtures/sd_vae.py from a checkout of the reference code.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <map>

#include "framework/paths.h"
#include "framework/safetensors.h"
#include "models/vae.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {
std::string fixture(const std::string& name) { return project_root() + "/tests/fixtures/" + name; }
SdVaeOptions fixture_options() {
  SdVaeOptions o;
  o.ch = 32;
  o.ch_mult = {1, 2};
  o.num_res_blocks = 1;
  return o;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(sd_vae)

BOOST_AUTO_TEST_CASE(decodes_as_the_reference_from_every_layout) {
  auto f = read_safetensors(fixture("sd_vae_data.safetensors"));
  std::map<std::string, at::Tensor> d(f.tensors.begin(), f.tensors.end());
  c10::InferenceMode guard;
  const std::map<std::string, std::string> files = {{"sd_vae_compvis.safetensors", "compvis"},
                                                    {"sd_vae_diffusers.safetensors", "diffusers"},
                                                    {"sd_vae_diffusers_legacy.safetensors", "diffusers-legacy-attention"}};
  for (auto& [file, layout] : files) {
    SdVaeDecoder vae(fixture_options());
    BOOST_CHECK_EQUAL(vae.load(fixture(file)), layout);
    auto images = vae.decode(d.at("latents"));
    const double err = (images - d.at("images")).abs().max().item<double>() / d.at("images").abs().max().item<double>();
    BOOST_TEST_MESSAGE(file << ": max relative error " << err);
    BOOST_CHECK_LT(err, 1e-5);
    // uint8 as sample_ddp.py stores them: at most one level off where the float value sits on a
    // rounding boundary.
    auto u = to_uint8_nhwc(images);
    BOOST_CHECK(u.sizes() == d.at("uint8").sizes());
    BOOST_CHECK_LE((u.to(at::kInt) - d.at("uint8").to(at::kInt)).abs().max().item<int>(), 1);
    BOOST_CHECK_GT((u == d.at("uint8")).to(at::kFloat).mean().item<double>(), 0.999);
  }
}

BOOST_AUTO_TEST_CASE(the_decoder_shape_is_read_from_the_file) {
  for (const char* file : {"sd_vae_compvis.safetensors", "sd_vae_diffusers.safetensors"}) {
    SdVaeOptions o = sd_vae_options_of(read_safetensors(fixture(file)), fixture(file));
    BOOST_CHECK_EQUAL(o.ch, 32);
    BOOST_CHECK(o.ch_mult == std::vector<int>({1, 2}));
    BOOST_CHECK_EQUAL(o.num_res_blocks, 1);
    BOOST_CHECK_EQUAL(o.z_channels, 4);
    BOOST_CHECK_EQUAL(o.out_channels, 3);
  }
  cachelab::testing::check_error([] { sd_vae_options_of(read_safetensors(fixture("dit_adm_weights.safetensors")), "dit_adm_weights"); },
                                 {"holds no SD VAE decoder"});
}

BOOST_AUTO_TEST_CASE(wrong_shapes_and_missing_tensors_are_named) {
  SdVaeOptions wide = fixture_options();
  wide.ch = 64;
  SdVaeDecoder a(wide);
  cachelab::testing::check_error([&] { a.load(fixture("sd_vae_diffusers.safetensors")); },
                                 {"tensor `decoder.conv_in.weight` has shape [64, 4, 3, 3], the decoder expects [128, 4, 3, 3]"});
  SdVaeOptions deeper = fixture_options();
  deeper.num_res_blocks = 2;
  SdVaeDecoder b(deeper);
  cachelab::testing::check_error([&] { b.load(fixture("sd_vae_compvis.safetensors")); },
                                 {"lack `decoder.up.0.block.2.conv1.bias`"});
  SdVaeDecoder c(fixture_options());
  cachelab::testing::check_error([&] { c.decode(at::zeros({1, 4, 8, 8})); }, {"call load() first"});
}

BOOST_AUTO_TEST_SUITE_END()
