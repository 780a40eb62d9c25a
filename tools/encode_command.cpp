#include "tools/encode_command.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <c10/core/InferenceMode.h>
#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <iostream>
#include <vector>

#include "framework/error.h"
#include "framework/safetensors.h"
#include "models/clip_text.h"
#include "models/clip_tokenizer.h"

namespace po = boost::program_options;

namespace cachelab {
namespace {

const char* kUsage =
    "cachelab encode-prompts --prompts FILE.txt --tokenizer DIR --text-encoder FILE.safetensors --output "
    "FILE.safetensors [--negative TEXT]";

at::Tensor ids_tensor(const ClipTokenizer& tok, const std::vector<std::string>& prompts) {
  at::Tensor ids = at::empty({int64_t(prompts.size()), ClipTokenizer::kContext}, at::kLong);
  for (size_t i = 0; i < prompts.size(); ++i) {
    const auto row = tok.encode(prompts[i]);
    std::copy(row.begin(), row.end(), ids.data_ptr<int64_t>() + int64_t(i) * ClipTokenizer::kContext);
  }
  return ids;
}

}  // namespace

int encode_prompts(const EncodePromptsOptions& o) {
  CL_CHECK(!o.prompts.empty() && !o.tokenizer.empty() && !o.text_encoder.empty() && !o.output.empty(),
           "usage: " << kUsage << " (SD 1.5's tokenizer/ folder and text_encoder/model.safetensors; docs/full-size.md)");
  CL_CHECK(o.batch >= 1, "--batch must be >= 1");
  CL_CHECK(o.heads >= 0, "--heads must be >= 1 (or 0: width / 64)");
  at::set_num_threads(std::max(1, o.threads));
  const std::vector<std::string> prompts = read_prompt_lines(o.prompts);
  CL_CHECK(!prompts.empty(), "prompt file `" << o.prompts << "` holds no prompt (one a line)");
  const ClipTokenizer tok(o.tokenizer);
  const SafetensorsFile weights = read_safetensors(o.text_encoder);
  const ClipTextOptions shape = clip_text_options_of(weights, o.text_encoder, o.heads);
  CL_CHECK(shape.max_positions >= ClipTokenizer::kContext,
           "`" << o.text_encoder << "` has " << shape.max_positions << " positions; CLIP prompts take "
               << ClipTokenizer::kContext);
  CL_CHECK(tok.vocab_size() <= shape.vocab_size, "the tokenizer `" << o.tokenizer << "` has " << tok.vocab_size()
                                                                   << " tokens, the text encoder `" << o.text_encoder
                                                                   << "` embeds " << shape.vocab_size
                                                                   << " (files of different models?)");
  ClipTextEncoder enc(shape);
  const std::string layout = enc.load(weights, o.text_encoder);
  std::printf("encode-prompts: tokenizer %s (%lld tokens, %zu merges), text encoder %s (%s layout, width %d, %d "
              "layers, %d heads)\n",
              o.tokenizer.c_str(), (long long)tok.vocab_size(), tok.merges(), o.text_encoder.c_str(), layout.c_str(),
              shape.width, shape.layers, shape.heads);

  const at::Tensor ids = ids_tensor(tok, prompts);
  int truncated = 0;
  for (const auto& p : prompts) truncated += tok.token_ids(p).size() > size_t(ClipTokenizer::kContext - 2);
  c10::InferenceMode guard;
  std::vector<at::Tensor> parts;
  const int64_t n = ids.size(0);
  for (int64_t s = 0; s < n; s += o.batch) parts.push_back(enc.encode(ids.narrow(0, s, std::min<int64_t>(o.batch, n - s))));
  const at::Tensor embeddings = at::cat(parts, 0);
  const at::Tensor negative = enc.encode(ids_tensor(tok, {o.negative}));
  const at::Tensor ones = at::ones({n, ClipTokenizer::kContext}, at::kLong);
  std::map<std::string, std::string> meta = {
      {"prompts", nlohmann::json(prompts).dump()},
      {"negative", nlohmann::json(o.negative).dump()},
      {"tokenizer", std::filesystem::path(o.tokenizer).filename().string()},
      {"text_encoder", std::filesystem::path(o.text_encoder).filename().string()},
      {"max_length", std::to_string(ClipTokenizer::kContext)},
      {"written_by", "cachelab encode-prompts"}};
  if (meta["tokenizer"].empty()) meta["tokenizer"] = std::filesystem::path(o.tokenizer).parent_path().filename().string();
  const auto parent = std::filesystem::path(o.output).parent_path();
  if (!parent.empty()) std::filesystem::create_directories(parent);
  write_safetensors(o.output,
                    {{"embeddings", embeddings.contiguous()},
                     {"mask", ones},
                     {"negative_embeddings", negative.contiguous()},
                     {"negative_mask", at::ones({1, ClipTokenizer::kContext}, at::kLong)},
                     {"ids", ids}},
                    meta);
  std::printf("encode-prompts: %s -> %s (%lld prompts, embeddings [%lld, %d, %d]%s; negative %s)\n", o.prompts.c_str(),
              o.output.c_str(), (long long)n, (long long)n, ClipTokenizer::kContext, shape.width,
              truncated ? (", " + std::to_string(truncated) + " truncated to 75 tokens").c_str() : "",
              o.negative.empty() ? "the empty prompt" : ("`" + o.negative + "`").c_str());
  return 0;
}

int encode_prompts_command(int argc, char** argv) {
  EncodePromptsOptions o;
  po::options_description opts("options");
  opts.add_options()("help,h", "this help")("prompts", po::value(&o.prompts), "text file, one prompt a line")(
      "tokenizer", po::value(&o.tokenizer), "folder with the CLIP tokenizer's vocab.json and merges.txt")(
      "text-encoder", po::value(&o.text_encoder),
      "CLIP text encoder weights (safetensors; Hugging Face names, or a CompVis checkpoint's cond_stage_model)")(
      "output", po::value(&o.output), "prompt file to write (safetensors)")(
      "negative", po::value(&o.negative), "negative prompt (default: the empty prompt, SD's unconditional)")(
      "heads", po::value(&o.heads), "attention heads (default width / 64, as every CLIP text model)")(
      "batch", po::value(&o.batch), "prompts per encoder call (default 8)")(
      "threads", po::value(&o.threads), "intra-op threads (default 1)");
  po::variables_map vm;
  try {
    // argv[1] is the subcommand.
    po::store(po::command_line_parser(argc - 1, argv + 1).options(opts).run(), vm);
    po::notify(vm);
  } catch (const po::error& e) {
    CL_FAIL(e.what() << " (see `cachelab encode-prompts --help`)");
  }
  if (vm.count("help")) {
    std::cout << "usage: " << kUsage << "\n  one prompt a line -> a prompt file of CLIP text embeddings (Stable "
                 "Diffusion 1.x; the image pipeline's `prompts`; docs/full-size.md)\n\n"
              << opts << "\n";
    return 0;
  }
  for (const char* required : {"prompts", "tokenizer", "text-encoder", "output"})
    CL_CHECK(vm.count(required), "cachelab encode-prompts needs --" << required << " (usage: " << kUsage << ")");
  return encode_prompts(o);
}

}  // namespace cachelab
