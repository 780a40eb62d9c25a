// `cachelab encode-prompts`: a prompt list through SD 1.x's CLIP tokenizer and text encoder into
// a prompt file (the layout models/image_pipeline.h reads, as tools/t5_embed.py writes for T5):
//   embeddings           F32 [N, 77, W]  the text encoder's last hidden state (W = 768 for SD 1.x)
//   mask                 I64 [N, 77]     all ones: SD's CLIP attends to every position, padding included
//   negative_embeddings  F32 [1, 77, W]  the negative prompt ("" by default: SD's unconditional half)
//   negative_mask        I64 [1, 77]     all ones
//   ids                  I64 [N, 77]     the token ids (<|startoftext|>, 75 tokens, <|endoftext|>, padding)
// metadata: prompts and negative (JSON), tokenizer, text_encoder (file names), max_length, written_by.
#pragma once
#include <string>

namespace cachelab {
struct EncodePromptsOptions {
  std::string prompts;       // text file, one prompt a line
  std::string tokenizer;     // folder holding vocab.json and merges.txt
  std::string text_encoder;  // safetensors (Hugging Face or CompVis names; models/clip_text.h)
  std::string output;        // safetensors prompt file
  std::string negative;      // the negative prompt; "" = the empty prompt
  int heads = 0;             // attention heads; 0 = width / 64 (every CLIP text model)
  int batch = 8;             // prompts per encoder call
  int threads = 1;
};
// Returns the exit code.
int encode_prompts(const EncodePromptsOptions& o);
// `cachelab encode-prompts ...` (argv[1] is the subcommand): parses its options, then encode_prompts.
int encode_prompts_command(int argc, char** argv);
}  // namespace cachelab
