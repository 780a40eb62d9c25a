// A byte-level BPE tokenizer read from a Hugging Face `tokenizer.json` (what
// PreTrainedTokenizerFast loads), for LLaDA-8B's tokenizer and others of its family (Llama 3,
// Qwen 2/3), and LLaDA-8B-Instruct's chat template.
//
// Supported, and refused with an error naming the file and the field otherwise:
//   model          type BPE: `vocab` {token: id}, `merges` as "a b" strings or [a, b] lists (rank =
//                  position), `ignore_merges` (a piece found whole in the vocabulary is one token);
//                  no dropout, no byte_fallback, no continuing_subword_prefix / end_of_word_suffix
//   added_tokens   matched verbatim in the text before pre-tokenization, longest first at the
//                  leftmost position (lstrip / rstrip / single_word are refused)
//   normalizer     null only
//   pre_tokenizer  Sequence [Split (Regex, behavior Isolated, invert false), ByteLevel
//                  (add_prefix_space false, use_regex false)]; the Split regex must be one of the
//                  known patterns, which are hand-written here (std::regex has no \p{L}):
//                    Llama 3 / GPT-4 (cl100k): digits in runs of 1-3
//                    Qwen 2/3: the same with single digits
//   post_processor null, ByteLevel (no ids), TemplateProcessing (`single`), or a Sequence of these
//   decoder        ByteLevel (bytes joined, invalid UTF-8 replaced by U+FFFD)
// Letters \p{L} and numbers \p{N} follow Unicode 17 (tables in the .cpp), white space \s is
// Unicode White_Space as Oniguruma (Hugging Face's regex engine) has it.
//
// Checked against transformers.js's tokenizer (npm @huggingface/tokenizers) on reduced Llama 3 and
// Qwen 3 tokenizer.json files: tools/fixtures/bpe_tokenizer.mjs, tests/models/test_bpe_tokenizer.cpp,
// docs/models.md. Plain C++: no LibTorch here.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace cachelab {

struct ChatMessage {
  std::string role;  // "system", "user", "assistant", ...
  std::string content;
};

class BpeTokenizer {
 public:
  // Reads a tokenizer.json; throws naming the file and field when it cannot be read or is unsupported.
  explicit BpeTokenizer(const std::string& tokenizer_json);
  ~BpeTokenizer();
  BpeTokenizer(BpeTokenizer&&) noexcept;
  BpeTokenizer& operator=(BpeTokenizer&&) noexcept;

  // Text (UTF-8) -> ids. Added tokens in the text become their ids; `add_special` applies the
  // post-processor (e.g. a leading BOS), as Hugging Face's `add_special_tokens=True` does.
  std::vector<int64_t> encode(const std::string& text, bool add_special = false) const;
  // The token strings of encode(text) (byte-level spelling, e.g. "Ġworld"), without the post-processor.
  std::vector<std::string> tokenize(const std::string& text) const;
  // Ids -> text; an unknown id throws. `skip_special` drops added tokens marked special.
  std::string decode(const std::vector<int64_t>& ids, bool skip_special = false) const;

  // The id of a token (vocabulary or added token); throws naming it when unknown.
  int64_t token_id(const std::string& token) const;
  bool has_token(const std::string& token) const;
  // Largest id + 1 (Hugging Face's vocab size with added tokens, for contiguous ids).
  int64_t vocab_size() const;
  size_t merges() const;
  const std::string& path() const;

  // LLaDA-8B-Instruct's chat template (its tokenizer_config.json), hard-coded — no Jinja engine is
  // built: `<|startoftext|>` before the first message, each message as
  // `<|start_header_id|>ROLE<|end_header_id|>\n\n` + content stripped of white space (Jinja's
  // `trim`, Python's str.strip()) + `<|eot_id|>`, then `<|start_header_id|>assistant<|end_header_id|>\n\n`.
  // LLaDA's template always ends with the assistant header (it ignores add_generation_prompt).
  // Throws when this tokenizer lacks one of those special tokens.
  std::string apply_chat_template(const std::vector<ChatMessage>& messages) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// LLaDA's template as text, without checking any tokenizer (see BpeTokenizer::apply_chat_template).
std::string llada_chat_template(const std::vector<ChatMessage>& messages);

// The Llama 3 / Qwen split of text into pieces (exposed for tests); `max_digits` 3 (Llama 3) or 1 (Qwen).
std::vector<std::string> bpe_split_llama3(const std::string& text, int max_digits);

}  // namespace cachelab
