// The byte-level BPE tokenizer of CLIP (openai/CLIP simple_tokenizer.py; Hugging Face's
// CLIPTokenizer, which Stable Diffusion 1.x uses), read from Hugging Face's files:
//   vocab.json   {"token": id}, tokens in the byte-to-unicode alphabet, word ends marked `</w>`
//   merges.txt   `#version: ...`, then one merge `a b` a line, best (lowest rank) first
// A prompt is cleaned (white space runs -> one space, trimmed), lowercased (Python's str.lower),
// split by CLIP's pre-tokenizer (<|startoftext|>, <|endoftext|>, 's 't 're 've 'm 'll 'd, runs of
// letters, single digits, runs of other non-space characters; Unicode letters / numbers / spaces
// as the `regex` module classifies them), each piece's UTF-8 bytes mapped to the byte alphabet
// and merged by BPE.
//
// What differs from SD's tokenizer (docs/full-size.md): ftfy.fix_text is not applied (curly
// quotes, mojibake, NFC, full-width forms and HTML entities are kept as typed); Python's Final_Sigma
// rule is approximated (a capital sigma after a letter and before a non-letter lowers to `ς`); the
// regex's case-insensitive matching of `'S`-style contractions against case-folded characters
// (such as `ſ`) is not reproduced. Plain C++: no LibTorch here.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace cachelab {

class ClipTokenizer {
 public:
  static constexpr int kContext = 77;  // CLIP's positions: <|startoftext|>, 75 tokens, <|endoftext|>

  // Reads `folder`/vocab.json and `folder`/merges.txt.
  explicit ClipTokenizer(const std::string& folder);
  ClipTokenizer(const std::string& vocab_json, const std::string& merges_txt);

  // BPE tokens of a prompt, without <|startoftext|> / <|endoftext|>, untruncated.
  std::vector<std::string> tokenize(const std::string& prompt) const;
  std::vector<int64_t> token_ids(const std::string& prompt) const;
  // As SD feeds the text encoder (padding="max_length", truncation=True): <|startoftext|>, the
  // first `length` - 2 token ids, <|endoftext|>, then `pad_id` up to `length`.
  std::vector<int64_t> encode(const std::string& prompt, int length = kContext) const;
  // ids -> text (`</w>` as a space; special tokens kept), for messages.
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t bos_id() const { return bos_; }
  int64_t eos_id() const { return eos_; }
  int64_t pad_id() const { return eos_; }  // SD 1.x's tokenizer pads with <|endoftext|>
  int64_t vocab_size() const { return int64_t(vocab_.size()); }
  size_t merges() const { return ranks_.size(); }

 private:
  std::vector<std::string> bpe(const std::string& piece) const;
  std::unordered_map<std::string, int64_t> vocab_;
  std::vector<std::string> by_id_;
  std::unordered_map<std::string, int> ranks_;  // "a b" -> rank
  int64_t bos_ = 0, eos_ = 0;
  struct Cache;  // piece -> BPE tokens, behind a mutex (copies share it: a pure memo)
  std::shared_ptr<Cache> cache_;
};

// A prompt file: one prompt a line (UTF-8; a final newline ends the last line, `\r\n` endings are
// accepted, a blank line is the empty prompt). Throws naming the file when it cannot be read.
std::vector<std::string> read_prompt_lines(const std::string& path);

// Text preparation, exposed for tests: white space collapsed and trimmed, then lowercased.
std::string clip_clean_text(const std::string& prompt);
// The pre-tokenizer's pieces of cleaned text.
std::vector<std::string> clip_pretokenize(const std::string& cleaned);

}  // namespace cachelab
