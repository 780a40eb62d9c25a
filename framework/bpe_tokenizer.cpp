#include "framework/bpe_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>

#include "framework/error.h"
#include "framework/bpe_split.h"
#include "framework/byte_level.h"

namespace cachelab {
namespace {

using namespace bpe_detail;

using Json = nlohmann::json;

// j[key], or null when absent (without copying: a vocabulary is large).
const Json& field(const Json& j, const char* key) {
  static const Json null;
  auto it = j.find(key);
  return it == j.end() ? null : *it;
}

std::string dump(const Json& j) {
  std::string s = j.dump();
  return s.size() > 200 ? s.substr(0, 200) + "..." : s;
}

}  // namespace


struct BpeTokenizer::Impl {
  std::string path;
  std::unordered_map<std::string, int64_t> vocab;  // the model's tokens
  std::vector<std::string> by_id;                  // id -> token (model or added)
  enum Kind : uint8_t { kNone, kModel, kAdded, kSpecial };
  std::vector<uint8_t> kind;
  std::unordered_map<uint64_t, std::pair<int32_t, int64_t>> merges;  // (left id, right id) -> (rank, merged id)
  int64_t byte_ids[256] = {};
  bool ignore_merges = false;
  int max_digits = 3;
  struct Added {
    std::string content;
    int64_t id;
  };
  std::vector<Added> added;  // longest first
  std::unordered_map<std::string, int64_t> added_ids;
  std::vector<int64_t> post_prefix, post_suffix;  // TemplateProcessing's `single` around the text

  [[noreturn]] void fail(const std::string& field, const std::string& msg) const {
    CL_FAIL("tokenizer `" << path << "`: " << field << ": " << msg);
  }
  void put(int64_t id, const std::string& token, Kind k) {
    if (id < 0 || id > (int64_t(1) << 31)) fail("token `" + token + "`", "id " + std::to_string(id) + " out of range");
    if (size_t(id) >= by_id.size()) {
      by_id.resize(size_t(id) + 1);
      kind.resize(size_t(id) + 1, kNone);
    }
    by_id[size_t(id)] = token;
    kind[size_t(id)] = k;
  }
  void read_model(const Json& m);
  void read_added(const Json& list);
  void read_pre_tokenizer(const Json& p);
  void read_post_processor(const Json& p);
  void bpe(const std::string& piece, std::vector<int64_t>& out) const;
  std::vector<int64_t> encode_plain(const std::string& text) const;
};

void BpeTokenizer::Impl::read_model(const Json& m) {
  if (!m.is_object()) fail("model", "missing or not an object");
  if (m.contains("type") && m["type"] != "BPE")
    fail("model.type", dump(m["type"]) + " is not supported (only BPE, a byte-level BPE tokenizer)");
  if (m.contains("dropout") && !m["dropout"].is_null() && !(m["dropout"].is_number() && m["dropout"].get<double>() == 0))
    fail("model.dropout", dump(m["dropout"]) + " is not supported (null only)");
  if (m.value("byte_fallback", false)) fail("model.byte_fallback", "true is not supported (byte-level BPE has no need)");
  for (const char* key : {"continuing_subword_prefix", "end_of_word_suffix"})
    if (m.contains(key) && !m[key].is_null() && m[key] != "")
      fail(std::string("model.") + key, dump(m[key]) + " is not supported (null or \"\" only)");
  ignore_merges = m.value("ignore_merges", false);
  if (!m.contains("vocab") || !m["vocab"].is_object()) fail("model.vocab", "missing or not an object {token: id}");
  for (const auto& [token, id] : m["vocab"].items()) {
    if (!id.is_number_integer()) fail("model.vocab", "the id of `" + token + "` is not an integer: " + dump(id));
    vocab[token] = id.get<int64_t>();
    put(id.get<int64_t>(), token, kModel);
  }
  const auto& alphabet = byte_alphabet();
  for (int b = 0; b < 256; ++b) {
    auto it = vocab.find(alphabet.to_char[b]);
    if (it == vocab.end())
      fail("model.vocab", "lacks the byte-level character `" + alphabet.to_char[b] + "` of byte " + std::to_string(b) +
                              " (not a byte-level BPE vocabulary)");
    byte_ids[b] = it->second;
  }
  if (!m.contains("merges") || !m["merges"].is_array()) fail("model.merges", "missing or not a list");
  const Json& list = m["merges"];
  for (size_t r = 0; r < list.size(); ++r) {
    const Json& e = list[r];
    std::string a, b;
    if (e.is_string()) {
      const std::string s = e.get<std::string>();
      const size_t sp = s.find(' ');
      if (sp == std::string::npos || sp == 0 || sp + 1 >= s.size() || s.find(' ', sp + 1) != std::string::npos)
        fail("model.merges[" + std::to_string(r) + "]", "`" + s + "` is not `first second`");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else if (e.is_array() && e.size() == 2 && e[0].is_string() && e[1].is_string()) {
      a = e[0].get<std::string>();
      b = e[1].get<std::string>();
    } else {
      fail("model.merges[" + std::to_string(r) + "]", dump(e) + " is neither \"a b\" nor [\"a\", \"b\"]");
    }
    auto ia = vocab.find(a), ib = vocab.find(b), iab = vocab.find(a + b);
    if (ia == vocab.end() || ib == vocab.end() || iab == vocab.end())
      fail("model.merges[" + std::to_string(r) + "]",
           "`" + a + " " + b + "`: `" + (ia == vocab.end() ? a : ib == vocab.end() ? b : a + b) + "` is not in the vocabulary");
    const uint64_t key = (uint64_t(ia->second) << 32) | uint64_t(ib->second);
    merges.emplace(key, std::make_pair(int32_t(r), iab->second));  // the first (best) rank wins
  }
}

void BpeTokenizer::Impl::read_added(const Json& list) {
  if (list.is_null()) return;
  if (!list.is_array()) fail("added_tokens", "not a list");
  for (const Json& t : list) {
    if (!t.is_object() || !t.contains("id") || !t["id"].is_number_integer() || !t.contains("content") ||
        !t["content"].is_string())
      fail("added_tokens", dump(t) + " lacks an integer `id` or a string `content`");
    const std::string content = t["content"].get<std::string>();
    for (const char* flag : {"lstrip", "rstrip", "single_word"})
      if (t.value(flag, false))
        fail("added_tokens", "`" + content + "` has " + flag + ": true, which is not supported (false only)");
    if (content.empty()) fail("added_tokens", "a token has empty content");
    const int64_t id = t["id"].get<int64_t>();
    put(id, content, t.value("special", false) ? kSpecial : kAdded);
    added.push_back({content, id});
    added_ids[content] = id;
  }
  std::stable_sort(added.begin(), added.end(), [](const Added& x, const Added& y) { return x.content.size() > y.content.size(); });
}

void BpeTokenizer::Impl::read_pre_tokenizer(const Json& p) {
  auto unsupported = [&](const std::string& field, const Json& v, const std::string& what) {
    fail(field, dump(v) + " is not supported (" + what + ")");
  };
  const char* expected = "a Sequence of Split (a known Regex, Isolated) and ByteLevel (add_prefix_space false, use_regex false)";
  if (!p.is_object() || p.value("type", "") != "Sequence" || !p.contains("pretokenizers") || !p["pretokenizers"].is_array() ||
      p["pretokenizers"].size() != 2)
    unsupported("pre_tokenizer", p, expected);
  const Json& split = p["pretokenizers"][0];
  const Json& bytes = p["pretokenizers"][1];
  if (split.value("type", "") != "Split") unsupported("pre_tokenizer.pretokenizers[0]", split, expected);
  if (split.value("behavior", "") != "Isolated" || split.value("invert", false))
    unsupported("pre_tokenizer.pretokenizers[0]", split, "behavior Isolated with invert false only");
  if (!split.contains("pattern") || !split["pattern"].is_object() || !split["pattern"].contains("Regex") ||
      !split["pattern"]["Regex"].is_string())
    unsupported("pre_tokenizer.pretokenizers[0].pattern", split.value("pattern", Json()), "a {\"Regex\": ...} pattern only");
  const std::string regex = split["pattern"]["Regex"].get<std::string>();
  const KnownPattern* known = nullptr;
  for (const auto& k : known_patterns())
    if (regex == k.regex) known = &k;
  if (!known) {
    std::ostringstream os;
    os << "the Split regex `" << regex << "` is not one of the patterns written out in framework/bpe_tokenizer.cpp (";
    for (const auto& k : known_patterns()) os << k.name << ": `" << k.regex << "`; ";
    os << "std::regex cannot run \\p{L}, so a new pattern needs code)";
    fail("pre_tokenizer.pretokenizers[0].pattern.Regex", os.str());
  }
  max_digits = known->max_digits;
  if (bytes.value("type", "") != "ByteLevel" || bytes.value("add_prefix_space", false) || bytes.value("use_regex", true))
    unsupported("pre_tokenizer.pretokenizers[1]", bytes, "ByteLevel with add_prefix_space false and use_regex false only");
}

void BpeTokenizer::Impl::read_post_processor(const Json& p) {
  if (p.is_null()) return;
  const std::string type = p.value("type", "");
  if (type == "ByteLevel") return;  // offsets only
  if (type == "Sequence" && p.contains("processors") && p["processors"].is_array()) {
    for (const Json& q : p["processors"]) read_post_processor(q);
    return;
  }
  if (type != "TemplateProcessing")
    fail("post_processor", dump(p) + " is not supported (null, ByteLevel, TemplateProcessing or a Sequence of them)");
  if (!p.contains("single") || !p["single"].is_array()) fail("post_processor.single", "missing or not a list");
  bool seen_text = false;
  for (const Json& item : p["single"]) {
    if (item.contains("Sequence")) {
      if (item["Sequence"].value("id", "") != "A" || seen_text)
        fail("post_processor.single", dump(item) + ": only one Sequence A is supported");
      seen_text = true;
    } else if (item.contains("SpecialToken") && item["SpecialToken"].contains("id")) {
      const Json& name = item["SpecialToken"]["id"];
      const Json& specials = p.value("special_tokens", Json::object());
      if (!name.is_string() || !specials.contains(name.get<std::string>()) ||
          !specials[name.get<std::string>()].contains("ids") || !specials[name.get<std::string>()]["ids"].is_array())
        fail("post_processor.special_tokens", "lacks the ids of " + dump(name));
      for (const Json& id : specials[name.get<std::string>()]["ids"])
        (seen_text ? post_suffix : post_prefix).push_back(id.get<int64_t>());
    } else {
      fail("post_processor.single", dump(item) + " is neither a SpecialToken nor a Sequence");
    }
  }
  if (!seen_text) fail("post_processor.single", "has no Sequence A");
}

void BpeTokenizer::Impl::bpe(const std::string& piece, std::vector<int64_t>& out) const {
  const auto& alphabet = byte_alphabet();
  if (ignore_merges) {
    std::string mapped;
    for (char b : piece) mapped += alphabet.to_char[static_cast<unsigned char>(b)];
    auto it = vocab.find(mapped);
    if (it != vocab.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // The best-ranked pair first, the leftmost among equals, one merge at a time (Hugging Face's
  // order), with a heap of candidate pairs over a linked list of symbols: O(n log n) for long pieces.
  const size_t n = piece.size();
  std::vector<int64_t> id(n);
  std::vector<size_t> next(n), prev(n);
  for (size_t k = 0; k < n; ++k) {
    id[k] = byte_ids[static_cast<unsigned char>(piece[k])];
    next[k] = k + 1;  // n: none
    prev[k] = k == 0 ? n : k - 1;
  }
  struct Pair {
    int32_t rank;
    size_t left, right;
    int64_t left_id, right_id, merged;
    bool operator>(const Pair& o) const { return rank != o.rank ? rank > o.rank : left > o.left; }
  };
  std::priority_queue<Pair, std::vector<Pair>, std::greater<Pair>> heap;
  auto push = [&](size_t l, size_t r) {
    if (l >= n || r >= n) return;
    auto it = merges.find((uint64_t(id[l]) << 32) | uint64_t(id[r]));
    if (it != merges.end()) heap.push({it->second.first, l, r, id[l], id[r], it->second.second});
  };
  for (size_t k = 0; k + 1 < n; ++k) push(k, k + 1);
  while (!heap.empty()) {
    const Pair p = heap.top();
    heap.pop();
    if (next[p.left] != p.right || id[p.left] != p.left_id || id[p.right] != p.right_id) continue;  // stale
    id[p.left] = p.merged;
    next[p.left] = next[p.right];
    if (next[p.right] < n) prev[next[p.right]] = p.left;
    id[p.right] = -1;
    next[p.right] = n + 1;  // removed
    push(prev[p.left], p.left);
    push(p.left, next[p.left]);
  }
  for (size_t k = 0; k < n; k = next[k]) out.push_back(id[k]);
}

std::vector<int64_t> BpeTokenizer::Impl::encode_plain(const std::string& text) const {
  std::vector<int64_t> ids;
  auto encode_segment = [&](size_t begin, size_t end) {
    if (begin == end) return;
    for (const std::string& piece : split_llama3(decode_utf8(text.substr(begin, end - begin)), max_digits)) bpe(piece, ids);
  };
  // Added tokens first: at each position the longest one that matches (leftmost-longest).
  size_t start = 0;
  for (size_t i = 0; i < text.size();) {
    const Added* hit = nullptr;
    for (const Added& a : added)
      if (text.compare(i, a.content.size(), a.content) == 0) {
        hit = &a;
        break;
      }
    if (!hit) {
      ++i;
      continue;
    }
    encode_segment(start, i);
    ids.push_back(hit->id);
    i += hit->content.size();
    start = i;
  }
  encode_segment(start, text.size());
  return ids;
}

BpeTokenizer::BpeTokenizer(const std::string& tokenizer_json) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.path = tokenizer_json;
  std::ifstream in(tokenizer_json, std::ios::binary);
  CL_CHECK(in.good(), "cannot read the tokenizer file `" << tokenizer_json
                                                        << "` (a Hugging Face tokenizer.json, e.g. from GSAI-ML/LLaDA-8B-Instruct)");
  Json j;
  try {
    j = Json::parse(in);
  } catch (const Json::exception& e) {
    CL_FAIL("tokenizer `" << tokenizer_json << "` is not valid JSON: " << e.what());
  }
  if (!j.is_object()) m.fail("the file", "not a JSON object");
  try {
    if (j.contains("normalizer") && !j["normalizer"].is_null())
      m.fail("normalizer", dump(j["normalizer"]) + " is not supported (null only)");
    m.read_model(field(j, "model"));
    m.read_added(field(j, "added_tokens"));
    m.read_pre_tokenizer(field(j, "pre_tokenizer"));
    m.read_post_processor(field(j, "post_processor"));
    const Json& d = field(j, "decoder");
    if (!d.is_object() || d.value("type", "") != "ByteLevel")
      m.fail("decoder", dump(d) + " is not supported (ByteLevel only)");
  } catch (const Json::exception& e) {
    CL_FAIL("tokenizer `" << tokenizer_json << "`: unexpected JSON shape: " << e.what());
  }
  for (int64_t id : m.post_prefix) CL_CHECK(id >= 0 && size_t(id) < m.kind.size() && m.kind[size_t(id)] != Impl::kNone,
                                            "tokenizer `" << tokenizer_json << "`: post_processor: id " << id << " is no token");
  for (int64_t id : m.post_suffix) CL_CHECK(id >= 0 && size_t(id) < m.kind.size() && m.kind[size_t(id)] != Impl::kNone,
                                            "tokenizer `" << tokenizer_json << "`: post_processor: id " << id << " is no token");
}

BpeTokenizer::~BpeTokenizer() = default;
BpeTokenizer::BpeTokenizer(BpeTokenizer&&) noexcept = default;
BpeTokenizer& BpeTokenizer::operator=(BpeTokenizer&&) noexcept = default;

std::vector<int64_t> BpeTokenizer::encode(const std::string& text, bool add_special) const {
  std::vector<int64_t> ids = impl_->encode_plain(text);
  if (!add_special) return ids;
  std::vector<int64_t> out = impl_->post_prefix;
  out.insert(out.end(), ids.begin(), ids.end());
  out.insert(out.end(), impl_->post_suffix.begin(), impl_->post_suffix.end());
  return out;
}

std::vector<std::string> BpeTokenizer::tokenize(const std::string& text) const {
  std::vector<std::string> tokens;
  for (int64_t id : impl_->encode_plain(text)) tokens.push_back(impl_->by_id[size_t(id)]);
  return tokens;
}

std::string BpeTokenizer::decode(const std::vector<int64_t>& ids, bool skip_special) const {
  const Impl& m = *impl_;
  const auto& alphabet = byte_alphabet();
  std::string bytes;
  for (int64_t id : ids) {
    CL_CHECK(id >= 0 && size_t(id) < m.kind.size() && m.kind[size_t(id)] != Impl::kNone,
             "id " << id << " is not a token of `" << m.path << "` (ids below " << m.kind.size() << ")");
    if (skip_special && m.kind[size_t(id)] == Impl::kSpecial) continue;
    // A token all of whose characters are in the byte alphabet gives those bytes; any other
    // (an added token with a space, say) gives its own UTF-8, as Hugging Face's ByteLevel decoder.
    const std::string& token = m.by_id[size_t(id)];
    std::string raw;
    bool all = true;
    for (char32_t c : decode_utf8(token)) {
      auto it = alphabet.back.find(c);
      if (it == alphabet.back.end()) {
        all = false;
        break;
      }
      raw += char(it->second);
    }
    bytes += all ? raw : token;
  }
  return lossy_utf8(bytes);
}

int64_t BpeTokenizer::token_id(const std::string& token) const {
  auto a = impl_->added_ids.find(token);
  if (a != impl_->added_ids.end()) return a->second;
  auto v = impl_->vocab.find(token);
  CL_CHECK(v != impl_->vocab.end(), "token `" << token << "` is not in the tokenizer `" << impl_->path << "`");
  return v->second;
}

bool BpeTokenizer::has_token(const std::string& token) const {
  return impl_->added_ids.count(token) > 0 || impl_->vocab.count(token) > 0;
}
int64_t BpeTokenizer::vocab_size() const { return int64_t(impl_->kind.size()); }
size_t BpeTokenizer::merges() const { return impl_->merges.size(); }
const std::string& BpeTokenizer::path() const { return impl_->path; }

namespace {
const char* const kBos = "<|startoftext|>";
const char* const kHeaderStart = "<|start_header_id|>";
const char* const kHeaderEnd = "<|end_header_id|>";
const char* const kEndOfTurn = "<|eot_id|>";

std::string strip(const std::string& text) {
  const std::u32string s = decode_utf8(text);
  size_t a = 0, b = s.size();
  while (a < b && is_strip_space(s[a])) ++a;
  while (b > a && is_strip_space(s[b - 1])) --b;
  return encode_utf8(s, a, b);
}
}  // namespace

std::string llada_chat_template(const std::vector<ChatMessage>& messages) {
  std::string out;
  for (size_t i = 0; i < messages.size(); ++i) {
    if (i == 0) out += kBos;
    out += std::string(kHeaderStart) + messages[i].role + kHeaderEnd + "\n\n" + strip(messages[i].content) + kEndOfTurn;
  }
  return out + kHeaderStart + "assistant" + kHeaderEnd + "\n\n";
}

std::string BpeTokenizer::apply_chat_template(const std::vector<ChatMessage>& messages) const {
  for (const char* token : {kBos, kHeaderStart, kHeaderEnd, kEndOfTurn})
    CL_CHECK(impl_->added_ids.count(token), "the tokenizer `" << impl_->path << "` lacks LLaDA's special token " << token
                                                              << " (its chat template is LLaDA-8B-Instruct's)");
  return llada_chat_template(messages);
}

}  // namespace cachelab
