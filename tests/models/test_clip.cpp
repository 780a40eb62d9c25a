// SD 1.5's text side against openai/CLIP on committed fixtures (tools/fixtures/clip_text.py):
// the byte-level BPE tokenizer on a truncated merge list and a list of awkward prompts, and the
// text Transformer at reduced size on random weights, under Hugging Face and CompVis names.
#include <ATen/ATen.h>
#include <c10/core/InferenceMode.h>

#include <boost/test/unit_test.hpp>
#include <cstdlib>
#include <filesystem>
#include <map>

#include "framework/paths.h"
#include "framework/safetensors.h"
#include "models/clip_text.h"
#include "models/clip_tokenizer.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {
std::string fixture(const std::string& name) { return project_root() + "/tests/fixtures/" + name; }
std::map<std::string, at::Tensor> tensors(const std::string& path) {
  auto f = read_safetensors(path);
  return {f.tensors.begin(), f.tensors.end()};
}
double rel_err(const at::Tensor& a, const at::Tensor& b) {
  return (a - b).abs().max().item<double>() / std::max(1e-12, b.abs().max().item<double>());
}
std::vector<int64_t> row(const at::Tensor& ids, int64_t i) {
  at::Tensor r = ids[i].contiguous();
  return {r.data_ptr<int64_t>(), r.data_ptr<int64_t>() + r.numel()};
}
// Every prompt's 77 ids equal the reference's; returns the prompts that differ.
int check_prompts(const ClipTokenizer& tok, const std::vector<std::string>& prompts,
                  const std::map<std::string, at::Tensor>& ref) {
  const at::Tensor& ids = ref.at("ids");
  BOOST_REQUIRE_EQUAL(int64_t(prompts.size()), ids.size(0));
  int wrong = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    const bool same = tok.encode(prompts[i]) == row(ids, int64_t(i));
    const bool same_length = int64_t(tok.token_ids(prompts[i]).size()) == ref.at("lengths")[int64_t(i)].item<int64_t>();
    BOOST_CHECK_MESSAGE(same && same_length, "prompt " << i << " `" << prompts[i] << "`: ids differ from the reference ("
                                                       << tok.decode(tok.token_ids(prompts[i])) << ")");
    wrong += !(same && same_length);
  }
  return wrong;
}
ClipTextOptions fixture_options() {
  ClipTextOptions o;
  o.vocab_size = 3514;
  o.width = 32;
  o.layers = 2;
  o.heads = 2;
  return o;
}
}  // namespace

BOOST_AUTO_TEST_SUITE(clip_tokenizer)

BOOST_AUTO_TEST_CASE(every_prompt_gets_the_reference_ids) {
  ClipTokenizer tok(fixture("clip_tokenizer"));
  BOOST_CHECK_EQUAL(tok.vocab_size(), 3514);
  BOOST_CHECK_EQUAL(tok.merges(), 3000u);
  BOOST_CHECK_EQUAL(tok.bos_id(), 3512);
  BOOST_CHECK_EQUAL(tok.eos_id(), 3513);
  const auto prompts = read_prompt_lines(fixture("clip_prompts.txt"));
  const auto ref = tensors(fixture("clip_tokenizer_ids.safetensors"));
  const int wrong = check_prompts(tok, prompts, ref);
  BOOST_TEST_MESSAGE(prompts.size() << " prompts, " << wrong << " differ from openai/CLIP's simple_tokenizer; longest "
                                    << ref.at("lengths").max().item<int64_t>() << " tokens (truncated to 75)");
  BOOST_CHECK_EQUAL(wrong, 0);
}

BOOST_AUTO_TEST_CASE(cleaning_and_pieces_follow_the_reference_pattern) {
  BOOST_CHECK_EQUAL(clip_clean_text(" \t A\u00a0 B\u3000C \x1f"), "a b c");
  BOOST_CHECK_EQUAL(clip_clean_text("İ ΟΔΟΣ ÉCOLE"), "i\u0307 οδος école");
  // At each position the pattern's alternatives in order: a contraction only where a piece starts,
  // so a punctuation run swallows the apostrophe of `🐱'll`.
  using Pieces = std::vector<std::string>;
  BOOST_CHECK(clip_pretokenize("it's don't<|endoftext|>x!! 42k café 🐱'll a 've") ==
              Pieces({"it", "'s", "don", "'t", "<|endoftext|>", "x", "!!", "4", "2", "k", "café", "🐱'", "ll", "a", "'ve"}));
  BOOST_CHECK(clip_pretokenize("a''ll <|end") == Pieces({"a", "''", "ll", "<|", "end"}));
  ClipTokenizer tok(fixture("clip_tokenizer"));
  BOOST_CHECK_EQUAL(tok.decode(tok.token_ids("A Photograph of an   astronaut")), "a photograph of an astronaut ");
  const auto ids = tok.encode("a cat", 8);
  BOOST_CHECK(ids.size() == 8u && ids.front() == tok.bos_id() && ids[3] == tok.eos_id() && ids.back() == tok.pad_id());
}

BOOST_AUTO_TEST_CASE(bad_files_and_text_are_named) {
  testing::TempDir tmp;
  cachelab::testing::check_error([&] { ClipTokenizer t(tmp.path); }, {"cannot read the CLIP tokenizer's vocabulary", "vocab.json"});
  const std::string vocab = tmp.file("vocab.json", R"({"a</w>": 0, "b</w>": 1, "<|startoftext|>": 2})");
  const std::string merges = tmp.file("merges.txt", "#version: 0.2\na b\n");
  cachelab::testing::check_error([&] { ClipTokenizer t(vocab, merges); }, {"lacks the special token <|endoftext|>"});
  const std::string vocab2 = tmp.file("v2.json", R"({"a": 0, "b": 1, "ab": 2, "<|startoftext|>": 3, "<|endoftext|>": 4})");
  cachelab::testing::check_error([&] { ClipTokenizer t(vocab2, tmp.file("m2.txt", "#version: 0.2\na b c\n")); },
                                 {"line 2: `a b c` is not `first second`"});
  cachelab::testing::check_error([&] { ClipTokenizer t(vocab2, tmp.file("m3.txt", "#version: 0.2\nb a\n")); },
                                 {"the merge of `b a` is not in the vocabulary"});
  cachelab::testing::check_error([&] { ClipTokenizer t(tmp.file("v3.json", "{\"a\": "), merges); }, {"is not valid JSON"});
  ClipTokenizer tok(fixture("clip_tokenizer"));
  cachelab::testing::check_error([&] { tok.encode("caf\xc3"); }, {"not valid UTF-8"});
  cachelab::testing::check_error([&] { read_prompt_lines(tmp.path + "/none.txt"); }, {"cannot read the prompt file"});
}

BOOST_AUTO_TEST_SUITE_END()

BOOST_AUTO_TEST_SUITE(clip_text)

BOOST_AUTO_TEST_CASE(encodes_as_the_reference_under_both_layouts) {
  const auto d = tensors(fixture("clip_text_data.safetensors"));
  c10::InferenceMode guard;
  ClipTextEncoder enc(fixture_options());
  BOOST_CHECK_EQUAL(enc.load(fixture("clip_text_weights.safetensors")), "hugging-face");
  const double err = rel_err(enc.encode(d.at("ids")), d.at("hidden"));
  BOOST_TEST_MESSAGE("CLIP text encoder (width 32, 2 layers), Hugging Face names: max relative error " << err);
  BOOST_CHECK_LT(err, 1e-5);

  // A CompVis checkpoint: the same tensors under cond_stage_model.transformer., beside the U-Net's.
  testing::TempDir tmp;
  auto f = read_safetensors(fixture("clip_text_weights.safetensors"));
  std::vector<std::pair<std::string, at::Tensor>> compvis = {{"model.diffusion_model.out.2.bias", at::zeros({4})}};
  for (auto& [name, t] : f.tensors) compvis.emplace_back("cond_stage_model.transformer." + name, t);
  write_safetensors(tmp.path + "/sd.safetensors", compvis);
  ClipTextEncoder enc2(fixture_options());
  BOOST_CHECK_EQUAL(enc2.load(tmp.path + "/sd.safetensors"), "compvis");
  const double err2 = rel_err(enc2.encode(d.at("ids")), d.at("hidden"));
  BOOST_TEST_MESSAGE("CompVis names: max relative error " << err2);
  BOOST_CHECK_LT(err2, 1e-5);
  // Fewer positions than 77 give the prefix of the causal encoding.
  const double prefix = rel_err(enc.encode(d.at("ids").narrow(1, 0, 10)), d.at("hidden").narrow(1, 0, 10));
  BOOST_CHECK_LT(prefix, 1e-5);
}

BOOST_AUTO_TEST_CASE(the_shape_is_read_from_the_file) {
  const std::string path = fixture("clip_text_weights.safetensors");
  ClipTextOptions o = clip_text_options_of(read_safetensors(path), path, 2);
  BOOST_CHECK_EQUAL(o.vocab_size, 3514);
  BOOST_CHECK_EQUAL(o.width, 32);
  BOOST_CHECK_EQUAL(o.layers, 2);
  BOOST_CHECK_EQUAL(o.heads, 2);
  BOOST_CHECK_EQUAL(o.max_positions, 77);
  BOOST_CHECK_EQUAL(clip_text_options_of(read_safetensors(path), path).heads, 1);  // width / 64, at least 1
  cachelab::testing::check_error(
      [] { clip_text_options_of(read_safetensors(fixture("sd_vae_data.safetensors")), "sd_vae_data"); },
      {"holds no CLIP text encoder"});
}

BOOST_AUTO_TEST_CASE(wrong_shapes_missing_tensors_and_bad_ids_are_named) {
  ClipTextOptions wide = fixture_options();
  wide.width = 64;
  ClipTextEncoder a(wide);
  cachelab::testing::check_error([&] { a.load(fixture("clip_text_weights.safetensors")); },
                                 {"has shape [3514, 32], the encoder expects [3514, 64]"});
  ClipTextOptions deeper = fixture_options();
  deeper.layers = 3;
  ClipTextEncoder b(deeper);
  cachelab::testing::check_error([&] { b.load(fixture("clip_text_weights.safetensors")); },
                                 {"lacks `text_model.encoder.layers.2."});
  ClipTextOptions shallow = fixture_options();
  shallow.layers = 1;
  ClipTextEncoder c(shallow);
  cachelab::testing::check_error([&] { c.load(fixture("clip_text_weights.safetensors")); },
                                 {"`text_model.encoder.layers.1.", "is not part of a text encoder"});
  ClipTextEncoder e(fixture_options());
  cachelab::testing::check_error([&] { e.encode(at::zeros({1, 77}, at::kLong)); }, {"call load() first"});
  e.load(fixture("clip_text_weights.safetensors"));
  cachelab::testing::check_error([&] { e.encode(at::full({1, 77}, 49407, at::kLong)); },
                                 {"outside the vocabulary of 3514"});
  cachelab::testing::check_error([&] { e.encode(at::zeros({1, 78}, at::kLong)); }, {"78 tokens, the encoder has 77"});
  cachelab::testing::check_error([&] { ClipTextEncoder x(ClipTextOptions{49408, 768, 12, 5}); }, {"heads 5 must divide"});
}

// The full-size check, run by hand (docs/full-size.md):
//   /usr/bin/python3 tools/fixtures/clip_text.py /path/to/CLIP --full /tmp/clip-full
//   CACHELAB_FULL_FIXTURES=/tmp/clip-full build/tests/test_models --run_test=clip_text/full_size
BOOST_AUTO_TEST_CASE(full_size, *boost::unit_test::disabled()) {
  const char* dir = std::getenv("CACHELAB_FULL_FIXTURES");
  if (!dir) {  // selected with the suite (--run_test=clip_text) but not asked for
    BOOST_TEST_MESSAGE("full_size: CACHELAB_FULL_FIXTURES is not set, nothing compared");
    return;
  }
  BOOST_REQUIRE_MESSAGE(std::filesystem::exists(std::string(dir) + "/clip_full_text_data.safetensors"),
                        "set CACHELAB_FULL_FIXTURES to the folder tools/fixtures/clip_text.py --full wrote");
  const std::string d(dir);
  ClipTokenizer tok(d + "/clip_full_tokenizer");
  BOOST_CHECK_EQUAL(tok.vocab_size(), 49408);
  BOOST_CHECK_EQUAL(tok.bos_id(), 49406);
  BOOST_CHECK_EQUAL(tok.eos_id(), 49407);
  const int wrong = check_prompts(tok, read_prompt_lines(fixture("clip_prompts.txt")),
                                  tensors(d + "/clip_full_tokenizer_ids.safetensors"));
  BOOST_TEST_MESSAGE("full vocabulary (48894 merges): " << wrong << " prompts differ from the reference");
  BOOST_CHECK_EQUAL(wrong, 0);
  const std::string weights = d + "/clip_full_text_weights.safetensors";
  const auto file = read_safetensors(weights);
  ClipTextEncoder enc(clip_text_options_of(file, weights));
  BOOST_CHECK_EQUAL(enc.options().heads, 12);
  BOOST_CHECK_EQUAL(enc.load(file, weights), "hugging-face");
  const auto data = tensors(d + "/clip_full_text_data.safetensors");
  c10::InferenceMode guard;
  const double err = rel_err(enc.encode(data.at("ids")), data.at("hidden"));
  BOOST_TEST_MESSAGE("CLIP ViT-L/14 text encoder (width 768, 12 layers, vocab 49408): max relative error " << err);
  BOOST_CHECK_LT(err, 1e-4);
}

BOOST_AUTO_TEST_SUITE_END()
