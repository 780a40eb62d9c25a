// Text prompts from a file, tokenized by a tokenizer.json: what the `mdlm_text` pipeline
// (models/mdlm_text.h) decodes and the `gsm8k` metric (metrics/gsm8k.h) grades.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "framework/bpe_tokenizer.h"

namespace cachelab {

// One line of a prompts file.
struct TextProblem {
  std::string question;
  std::string answer;  // "" when the line has none
  int line = 0;        // 1-based line number in the file, for messages
};
// Reads a JSONL prompts file (resolved path); throws naming the file and line on a bad line.
std::vector<TextProblem> read_text_problems(const std::string& path);
// A question's prompt ids as the pipeline builds them (see the header comment).
std::vector<int64_t> encode_text_prompt(const BpeTokenizer& tok, const std::string& question, bool chat);
// The pad id of outputs: `<|endoftext|>`, else `<|eot_id|>`; throws when the tokenizer has neither.
int64_t text_pad_id(const BpeTokenizer& tok);

}  // namespace cachelab
