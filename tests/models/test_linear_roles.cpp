// Every backbone declares what each of its linears does (LinearRole, framework/ops.h): none is
// left `other`, each model has the roles its architecture has, one role selects the same kind
// of layer whatever the checkpoint calls it, and ptq refuses to treat a model's timestep
// linears apart by the default names when those names miss them (PixArt's t_block).
#include <ATen/ATen.h>

#include <boost/test/unit_test.hpp>
#include <map>
#include <string>
#include <vector>

#include "framework/ops.h"
#include "models/dit.h"
#include "models/llada.h"
#include "models/pixart.h"
#include "models/sd_unet.h"
#include "models/tiny_mdlm.h"
#include "models/tiny_video.h"
#include "models/unet.h"
#include "quant/ptq.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {

std::map<std::string, int> role_counts(const Backbone& bb) {
  std::map<std::string, int> n;
  for (auto& l : bb.linears()) ++n[linear_role_name(l.role)];
  return n;
}

PixartOptions small_pixart() {
  PixartOptions o;
  o.input_size = 8, o.hidden_size = 64, o.depth = 2, o.num_heads = 4, o.caption_channels = 32, o.model_max_length = 8;
  return o;
}

LladaOptions small_llada() {
  LladaOptions o;
  o.d_model = 16, o.n_layers = 2, o.n_heads = 2, o.mlp_hidden_size = 24, o.vocab_size = 12, o.mask_token_id = 10;
  o.max_sequence_length = 8;
  return o;
}

SdUnetOptions small_sd_unet() {  // transformers at the upper two of three levels, as SD 1.5
  SdUnetOptions o;
  o.input_size = 8, o.model_channels = 32, o.channel_mult = {1, 1, 2}, o.num_res_blocks = 1;
  o.attention_resolutions = {1, 2}, o.num_heads = 2, o.context_dim = 16, o.context_length = 5;
  return o;
}

}  // namespace

BOOST_AUTO_TEST_SUITE(linear_roles)

BOOST_AUTO_TEST_CASE(every_model_declares_the_role_of_every_linear) {
  Dit dit(testing::tiny_dit_options());  // depth 4; the final layer has its own modulation
  const std::map<std::string, int> want_dit = {{"qkv", 4}, {"proj", 4}, {"fc1", 4}, {"fc2", 4},
                                               {"modulation", 5}, {"time_embed", 2}, {"head", 1}};
  BOOST_CHECK(role_counts(dit) == want_dit);
  Pixart pixart(small_pixart());  // adaLN-single: one modulation linear (t_block) for the whole model
  const std::map<std::string, int> want_pixart = {
      {"qkv", 2},  {"proj", 2}, {"cross_q", 2},    {"cross_kv", 2},   {"cross_proj", 2}, {"fc1", 2},
      {"fc2", 2},  {"embed", 2}, {"modulation", 1}, {"time_embed", 2}, {"head", 1}};
  BOOST_CHECK(role_counts(pixart) == want_pixart);
  Llada llada(small_llada());  // q / k / v apart, SwiGLU's gate and up both fc1
  const std::map<std::string, int> want_llada = {{"qkv", 6}, {"proj", 2}, {"fc1", 4}, {"fc2", 2}, {"head", 1}};
  BOOST_CHECK(role_counts(llada) == want_llada);
  SdUnet sd(small_sd_unet());
  auto n = role_counts(sd);
  BOOST_CHECK_EQUAL(n["time_embed"], 2);
  BOOST_CHECK_EQUAL(n["qkv"], 3 * n["proj"]);       // to_q, to_k, to_v per self-attention
  BOOST_CHECK_EQUAL(n["cross_kv"], 2 * n["cross_q"]);  // to_k, to_v of the caption per cross-attention
  BOOST_CHECK(n["proj"] > 0 && n["cross_proj"] == n["proj"] && n["fc1"] == n["proj"] && n["fc2"] == n["proj"]);
  BOOST_CHECK(n["modulation"] > 0);  // each residual block's emb_layers.1
  Unet unet(testing::tiny_unet_options());
  TinyMdlm mdlm{TinyMdlmOptions{}};
  TinyVideo video{TinyVideoOptions{}};
  for (const Backbone* bb : std::vector<const Backbone*>{&dit, &pixart, &llada, &sd, &unet, &mdlm, &video})
    for (auto& l : bb->linears()) BOOST_CHECK_MESSAGE(l.role != LinearRole::Other, l.name << " has no role");
}

BOOST_AUTO_TEST_CASE(a_role_selects_the_same_kind_of_layer_under_any_name) {
  Dit dit(testing::tiny_dit_options());
  Llada llada(small_llada());
  auto picked = [](const Backbone& bb, const std::vector<std::string>& sel) {
    std::vector<std::string> out;
    for (auto& l : bb.linears())
      if (linear_matches(l, sel)) out.push_back(l.name);
    return out;
  };
  BOOST_CHECK((picked(dit, {"fc1"}) ==
               std::vector<std::string>{"blocks.0.mlp.fc1", "blocks.1.mlp.fc1", "blocks.2.mlp.fc1", "blocks.3.mlp.fc1"}));
  BOOST_CHECK((picked(llada, {"proj"}) ==
               std::vector<std::string>{"model.transformer.blocks.0.attn_out", "model.transformer.blocks.1.attn_out"}));
  // On the DiT the default temporal names and the timestep roles are the same set.
  BOOST_CHECK(picked(dit, PtqOptions().temporal_layers) == picked(dit, {"time_embed", "modulation"}));
  // Names still select one layer; `blocks` and `all` keep their meaning.
  BOOST_CHECK((picked(dit, {"blocks.1.attn.qkv"}) == std::vector<std::string>{"blocks.1.attn.qkv"}));
  BOOST_CHECK_EQUAL(picked(dit, {"all"}).size(), dit.linears().size());
  for (auto& name : linear_role_names()) {
    LinearRole r;
    BOOST_REQUIRE(linear_role_from_name(name, r));
    BOOST_CHECK_EQUAL(linear_role_name(r), name);
  }
}

BOOST_AUTO_TEST_CASE(ptq_refuses_default_temporal_names_that_miss_the_timestep_linears) {
  PtqOptions o;
  o.temporal = "exact";
  o.calibration = "results/calib/roles-test.safetensors";
  Pixart pixart(small_pixart());
  PtqOps on_pixart(o);
  on_pixart.start_calibration();
  testing::check_error([&] { on_pixart.begin_run(pixart.linears(), nullptr); },
                       {"temporal_layers", "selects 2 linears", "3 timestep linears", "[time_embed, modulation]"});
  o.temporal_layers = {"time_embed", "modulation"};
  PtqOps by_role(o);
  by_role.start_calibration();
  by_role.begin_run(pixart.linears(), nullptr);  // accepted
  o.temporal_layers = PtqOptions().temporal_layers;
  Dit dit(testing::tiny_dit_options());
  PtqOps on_dit(o);
  on_dit.start_calibration();
  on_dit.begin_run(dit.linears(), nullptr);  // the names are the DiT's
}

BOOST_AUTO_TEST_SUITE_END()
