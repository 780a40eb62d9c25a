// The tokenizer.json BPE tokenizer (LLaDA's family) against transformers.js on committed fixtures
// (tools/fixtures/bpe_tokenizer.mjs): reduced Llama 3 and Qwen 3 tokenizer.json files with LLaDA's
// special tokens, awkward prompts with the reference's ids and decoded text, and LLaDA's chat
// template as @huggingface/jinja renders it.
#include <boost/test/unit_test.hpp>
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/paths.h"
#include "framework/bpe_tokenizer.h"
#include "tests/test_util.h"

using namespace cachelab;

namespace {
std::string fixture(const std::string& name) { return project_root() + "/tests/fixtures/bpe_tokenizer/" + name; }
nlohmann::json reference() {
  std::ifstream in(fixture("reference.json"));
  return nlohmann::json::parse(in);
}
std::vector<int64_t> ids(const nlohmann::json& j) { return j.get<std::vector<int64_t>>(); }
std::string show(const std::vector<int64_t>& v) {
  std::string s;
  for (int64_t x : v) s += std::to_string(x) + " ";
  return s;
}

// Every prompt of `ref` (reference.json's layout) through both tokenizers of `folder` (the committed
// fixtures by default); returns (prompts, prompts that differ from the reference).
std::pair<int, int> check_prompts(const nlohmann::json& ref, bool quiet, const std::string& folder = fixture("")) {
  int prompts = 0, wrong = 0;
  for (const char* name : {"llama3", "qwen3"}) {
    const auto t0 = std::chrono::steady_clock::now();
    BpeTokenizer tok(folder + "/" + name + "/tokenizer.json");
    const double load_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    const auto& r = ref["tokenizers"][name];
    if (r.contains("merges")) BOOST_CHECK_EQUAL(tok.merges(), r["merges"].get<size_t>());
    if (tok.has_token("<|mdm_mask|>")) BOOST_CHECK_EQUAL(tok.token_id("<|mdm_mask|>"), 126336);
    int differ = 0;
    for (const auto& p : r["prompts"]) {
      const std::string text = p["text"];
      const auto got = tok.encode(text);
      const auto got_special = tok.encode(text, true);
      const bool same = got == ids(p["ids"]) && got_special == ids(p["ids_with_special"]) &&
                        tok.tokenize(text) == p["tokens"].get<std::vector<std::string>>();
      const bool decodes = tok.decode(got) == p["decoded"].get<std::string>() &&
                           tok.decode(got, true) == p["decoded_skip_special"].get<std::string>();
      // The byte-level vocabulary is lossless: without special tokens skipped the text comes back.
      const bool back = tok.decode(got) == text;
      if (!quiet || differ < 10) {
        BOOST_CHECK_MESSAGE(same, name << " `" << text << "`: ids " << show(got) << "differ from the reference's "
                                       << show(ids(p["ids"])));
        BOOST_CHECK_MESSAGE(decodes, name << " `" << text << "`: decodes to `" << tok.decode(got)
                                          << "`, the reference to `" << p["decoded"].get<std::string>() << "`");
        BOOST_CHECK_MESSAGE(back, name << " `" << text << "` does not decode back");
      }
      differ += !(same && decodes && back);
      ++prompts;
    }
    wrong += differ;
    BOOST_TEST_MESSAGE(name << ": " << r["prompts"].size() << " prompts, " << differ << " differ from transformers.js ("
                            << tok.merges() << " merges, " << tok.vocab_size() << " ids, loaded in " << load_ms << " ms)");
  }
  return {prompts, wrong};
}
}  // namespace

BOOST_AUTO_TEST_SUITE(bpe_tokenizer)

BOOST_AUTO_TEST_CASE(every_prompt_gets_the_reference_ids_and_decodes_back) {
  const auto [prompts, wrong] = check_prompts(reference(), false);
  BOOST_CHECK_GT(prompts, 40);
  BOOST_CHECK_EQUAL(wrong, 0);
}

BOOST_AUTO_TEST_CASE(llada_chat_template_matches_jinja_and_encodes_special_tokens_whole) {
  const auto ref = reference();
  BpeTokenizer tok(fixture("llama3/tokenizer.json"));
  for (const auto& c : ref["chat"]) {
    std::vector<ChatMessage> messages;
    for (const auto& m : c["messages"]) messages.push_back({m["role"], m["content"]});
    const std::string text = tok.apply_chat_template(messages);
    BOOST_CHECK_EQUAL(text, c["text"].get<std::string>());
    BOOST_CHECK_MESSAGE(tok.encode(text) == ids(c["ids"]), "chat ids " << show(tok.encode(text)) << "differ from "
                                                                       << show(ids(c["ids"])));
  }
  BOOST_TEST_MESSAGE(ref["chat"].size() << " conversations rendered as @huggingface/jinja renders LLaDA's template");
  // The form LLaDA's generate.py feeds the model, with each special token one id.
  const std::string text = tok.apply_chat_template({{"user", " What is 2+2?\n"}});
  BOOST_CHECK_EQUAL(text, "<|startoftext|><|start_header_id|>user<|end_header_id|>\n\nWhat is 2+2?<|eot_id|>"
                          "<|start_header_id|>assistant<|end_header_id|>\n\n");
  const auto id = tok.encode(text);
  BOOST_REQUIRE_GE(id.size(), 8u);
  BOOST_CHECK_EQUAL(id[0], 126080);
  BOOST_CHECK_EQUAL(id[1], 126346);
  BOOST_CHECK_EQUAL(id[3], 126347);
  BOOST_CHECK_EQUAL(id[id.size() - 2], 126347);
  BOOST_CHECK_EQUAL(std::count(id.begin(), id.end(), 126348), 1);
  BOOST_CHECK_EQUAL(tok.decode(id, true), "user\n\nWhat is 2+2?assistant\n\n");
}

BOOST_AUTO_TEST_CASE(pieces_follow_the_split_patterns) {
  using Pieces = std::vector<std::string>;
  BOOST_CHECK(bpe_split_llama3("I'LL don't  \n\n x 12345!!\n\nok", 3) ==
              Pieces({"I", "'LL", " don", "'t", "  \n\n", " x", " ", "123", "45", "!!\n\n", "ok"}));
  BOOST_CHECK(bpe_split_llama3("a   b\t", 1) == Pieces({"a", "  ", " b", "\t"}));
  BOOST_CHECK(bpe_split_llama3("x 12 'ſ", 1) == Pieces({"x", " ", "1", "2", " '", "ſ"}));
  BOOST_CHECK(bpe_split_llama3("'ſ", 1) == Pieces({"'ſ"}));
}

BOOST_AUTO_TEST_CASE(bad_files_and_inputs_are_named) {
  using cachelab::testing::check_error;
  testing::TempDir tmp;
  check_error([&] { BpeTokenizer t(tmp.path + "/none.json"); }, {"cannot read the tokenizer file", "none.json"});
  check_error([&] { BpeTokenizer t(tmp.file("bad.json", "{\"model\": ")); }, {"is not valid JSON"});
  // A valid file, then one field at a time made unsupported.
  std::ifstream in(fixture("qwen3/tokenizer.json"));
  const auto good = nlohmann::json::parse(in);
  auto variant = [&](const std::string& name, const std::function<void(nlohmann::json&)>& edit) {
    auto j = good;
    edit(j);
    return tmp.file(name, j.dump());
  };
  check_error([&] { BpeTokenizer t(variant("a.json", [](auto& j) { j["model"]["type"] = "Unigram"; })); },
              {"a.json", "model.type", "Unigram", "only BPE"});
  check_error([&] { BpeTokenizer t(variant("b.json", [](auto& j) { j["normalizer"] = {{"type", "NFC"}}; })); },
              {"normalizer", "NFC", "null only"});
  check_error([&] { BpeTokenizer t(variant("c.json", [](auto& j) {
                j["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = "\\s+|\\w+";
              })); },
              {"the Split regex `\\s+|\\w+` is not one of the patterns", "Llama 3"});
  check_error([&] { BpeTokenizer t(variant("d.json", [](auto& j) { j["pre_tokenizer"] = {{"type", "Whitespace"}}; })); },
              {"pre_tokenizer", "Whitespace", "is not supported"});
  check_error([&] { BpeTokenizer t(variant("e.json", [](auto& j) { j["decoder"] = {{"type", "WordPiece"}}; })); },
              {"decoder", "ByteLevel only"});
  check_error([&] { BpeTokenizer t(variant("f.json", [](auto& j) { j["model"]["merges"].push_back({"Ġ", "zz"}); })); },
              {"model.merges[", "`zz` is not in the vocabulary"});
  check_error([&] { BpeTokenizer t(variant("g.json", [](auto& j) { j["added_tokens"][0]["lstrip"] = true; })); },
              {"added_tokens", "lstrip: true"});
  check_error([&] { BpeTokenizer t(variant("h.json", [](auto& j) { j["model"]["vocab"].erase("Ġ"); })); },
              {"lacks the byte-level character `Ġ` of byte 32"});
  BpeTokenizer tok(fixture("qwen3/tokenizer.json"));
  check_error([&] { tok.token_id("<|nope|>"); }, {"token `<|nope|>` is not in the tokenizer", "qwen3/tokenizer.json"});
  check_error([&] { tok.decode({39, 999999}); }, {"id 999999 is not a token of"});
  check_error([&] { tok.encode("caf\xc3"); }, {"not valid UTF-8"});
  BOOST_CHECK_EQUAL(tok.decode({tok.token_id("Ã")}), "\xEF\xBF\xBD");  // a lone lead byte
  // The chat template needs LLaDA's special tokens: without <|startoftext|> it says so.
  BpeTokenizer no_bos(variant("i.json", [](auto& j) {
    auto& list = j["added_tokens"];
    for (size_t i = 0; i < list.size(); ++i)
      if (list[i]["content"] == "<|startoftext|>") list.erase(i);
  }));
  check_error([&] { no_bos.apply_chat_template({{"user", "hi"}}); }, {"lacks LLaDA's special token <|startoftext|>"});
}

BOOST_AUTO_TEST_SUITE_END()

// A suite of its own, so that --run_test=bpe_tokenizer does not enable it.
BOOST_AUTO_TEST_SUITE(bpe_tokenizer_fuzz)

// Random strings, run by hand (about 2 MB, not committed):
//   node tools/fixtures/bpe_tokenizer.mjs /tmp/tokref/node_modules --fuzz 3000 /tmp/bpe_fuzz.json
//   CACHELAB_BPE_FUZZ=/tmp/bpe_fuzz.json build/tests/test_models --run_test=bpe_tokenizer_fuzz
BOOST_AUTO_TEST_CASE(random_strings, *boost::unit_test::disabled()) {
  const char* file = std::getenv("CACHELAB_BPE_FUZZ");
  BOOST_REQUIRE_MESSAGE(file, "set CACHELAB_BPE_FUZZ to the file tools/fixtures/bpe_tokenizer.mjs --fuzz wrote");
  std::ifstream in(file);
  BOOST_REQUIRE_MESSAGE(in.good(), "cannot read CACHELAB_BPE_FUZZ=" << file);
  const auto [prompts, wrong] = check_prompts(nlohmann::json::parse(in), true);
  BOOST_TEST_MESSAGE(prompts << " random strings, " << wrong << " differ");
  BOOST_CHECK_EQUAL(wrong, 0);
}

// The whole published Llama 3 and Qwen 3 tokenizer.json files, run by hand (about 12 MB, not committed):
//   node tools/fixtures/bpe_tokenizer.mjs /tmp/tokref/node_modules --full /tmp/bpe_full
//   CACHELAB_FULL_FIXTURES=/tmp/bpe_full build/tests/test_models --run_test=bpe_tokenizer_fuzz/full_size
BOOST_AUTO_TEST_CASE(full_size, *boost::unit_test::disabled()) {
  const char* dir = std::getenv("CACHELAB_FULL_FIXTURES");
  BOOST_REQUIRE_MESSAGE(dir && std::ifstream(std::string(dir) + "/reference.json").good(),
                        "set CACHELAB_FULL_FIXTURES to the folder tools/fixtures/bpe_tokenizer.mjs --full wrote");
  std::ifstream in(std::string(dir) + "/reference.json");
  const auto t0 = std::chrono::steady_clock::now();
  const auto [prompts, wrong] = check_prompts(nlohmann::json::parse(in), true, dir);
  BOOST_TEST_MESSAGE(prompts << " prompts and random strings on the whole files, " << wrong << " differ ("
                             << std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() << " s)");
  BOOST_CHECK_EQUAL(wrong, 0);
}

BOOST_AUTO_TEST_SUITE_END()
