// Lexer: the source becomes a sequence of chunks — literal text (whitespace rules already applied), {{ }} and
// {% %} tags as token lists. Comments vanish; {% raw %} bodies become text. jinja2's whitespace rules
// (trim_blocks, lstrip_blocks, -/+ markers) are applied exactly as its lexer applies them.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/common.h"

namespace ernie::jinja {

enum class TokKind { Name, String, Int, Float, Op };

struct Token {
  TokKind kind;
  std::string text;  // name, operator, or the literal's source
  Json value;        // string / number literals
  int line;
};

enum class ChunkKind { Text, Print, Statement };

struct Chunk {
  ChunkKind kind;
  std::string text;
  std::vector<Token> tokens;
  int line;
};

// Splits a template into chunks. Throws ernie::Error "chat template: <what> at line N" on invalid UTF-8, an
// unclosed tag, comment or raw block, an unterminated string, unbalanced brackets or an oversized int literal.
std::vector<Chunk> lex(std::string_view source);

}  // namespace ernie::jinja
