// UTF-8 and GPT-2's byte-level alphabet, shared by the byte-level BPE tokenizers (CLIP's,
// models/clip_tokenizer.h; tokenizer.json's, framework/bpe_tokenizer.h). Plain C++.
#pragma once
#include <string>
#include <unordered_map>

namespace cachelab {

// Code points of UTF-8 text; malformed UTF-8 is an error naming the byte (and `what` the text is).
std::u32string decode_utf8(const std::string& s, const char* what = "text");
void append_utf8(std::string& out, char32_t c);

// GPT-2's reversible map from bytes to printable characters: printable Latin-1 bytes map to
// themselves, the others (controls, space, U+007F..U+00A0, U+00AD) to U+0100 onwards in order.
struct ByteAlphabet {
  std::string to_char[256];                          // UTF-8 of each byte's character
  std::unordered_map<char32_t, unsigned char> back;  // character -> byte
  ByteAlphabet();
};
const ByteAlphabet& byte_alphabet();

}  // namespace cachelab
