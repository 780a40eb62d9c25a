// The pre-tokenizer half of framework/bpe_tokenizer.h: Unicode classes as the reference sees
// them, UTF-8 helpers and the Split patterns written out by hand. Internal to the tokenizer.
#pragma once
#include <string>
#include <vector>

namespace cachelab::bpe_detail {

// The Split patterns written out below, as tokenizer.json spells them, and their digit run length.
struct KnownPattern {
  const char* name;
  const char* regex;
  int max_digits;
};
const std::vector<KnownPattern>& known_patterns();

// Python's str.strip() (Jinja's `trim`) white space.
bool is_strip_space(char32_t c);
std::string encode_utf8(const std::u32string& s, size_t begin, size_t end);
// Bytes -> text, each maximal ill-formed subsequence replaced by U+FFFD.
std::string lossy_utf8(const std::string& s);
// A Llama 3 / Qwen Split of text (code points) into pieces (UTF-8), digits in runs of max_digits.
std::vector<std::string> split_llama3(const std::u32string& s, int max_digits);

}  // namespace cachelab::bpe_detail
