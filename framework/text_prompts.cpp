#include "framework/text_prompts.h"

#include <fstream>
#include <nlohmann/json.hpp>

#include "framework/error.h"

namespace cachelab {

std::vector<TextProblem> read_text_problems(const std::string& path) {
  std::ifstream in(path);
  CL_CHECK(in, "prompts file `" << path << "` cannot be read (a JSONL file: one {\"question\": ..., \"answer\": ...} a line)");
  std::vector<TextProblem> out;
  std::string text;
  for (int line = 1; std::getline(in, text); ++line) {
    if (text.find_first_not_of(" \t\r") == std::string::npos) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(text);
    } catch (const std::exception& e) {
      CL_FAIL(path << ":" << line << ": not a JSON object (" << e.what() << ")");
    }
    CL_CHECK(j.is_object() && j.contains("question") && j["question"].is_string(),
             path << ":" << line << ": needs a \"question\" string (one JSON object a line)");
    TextProblem p;
    p.question = j["question"].get<std::string>();
    p.line = line;
    if (j.contains("answer")) {
      CL_CHECK(j["answer"].is_string(), path << ":" << line << ": \"answer\" must be a string");
      p.answer = j["answer"].get<std::string>();
    }
    out.push_back(std::move(p));
  }
  CL_CHECK(!out.empty(), "prompts file `" << path << "` holds no line");
  return out;
}

std::vector<int64_t> encode_text_prompt(const BpeTokenizer& tok, const std::string& question, bool chat) {
  if (!chat) return tok.encode(question, /*add_special=*/true);
  return tok.encode(tok.apply_chat_template({{"user", question}}), /*add_special=*/false);
}

int64_t text_pad_id(const BpeTokenizer& tok) {
  for (const char* t : {"<|endoftext|>", "<|eot_id|>"})
    if (tok.has_token(t)) return tok.token_id(t);
  CL_FAIL("tokenizer `" << tok.path() << "` has neither <|endoftext|> nor <|eot_id|> to pad outputs with");
}

}  // namespace cachelab
