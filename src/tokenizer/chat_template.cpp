// ChatTemplate is a thin facade over the Jinja2-subset interpreter in tokenizer/jinja/, in three stages: the
// lexer (lexer.h) splits the source into text and tag chunks, applying jinja2's whitespace rules (trim_blocks,
// lstrip_blocks, -/+ markers) exactly as its lexer does; the parser (parser.h) builds the syntax tree (ast.h)
// following jinja2's grammar and precedence; the renderer (render.h) walks it with Python value semantics
// (value.h, operators.h: truthiness, ==, str(), repr()) because that is what the templates were written against.
#include "tokenizer/chat_template.h"

#include <exception>
#include <memory>
#include <string>
#include <utility>

#include "core/error.h"
#include "tokenizer/jinja/common.h"
#include "tokenizer/jinja/lexer.h"
#include "tokenizer/jinja/parser.h"
#include "tokenizer/jinja/render.h"

namespace ernie {

ChatTemplate ChatTemplate::parse(std::string_view source) {
  try {
    auto program = std::make_shared<jinja::Program>();
    program->body = jinja::Parser(jinja::lex(source)).parse_template();
    return ChatTemplate(std::move(program));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    jinja::fail_line(std::string("chat template: ") + e.what());
  }
}

std::string ChatTemplate::render(const nlohmann::json& context) const {
  return jinja::render(*program_, context);
}

std::string ChatTemplate::render_ordered(const nlohmann::ordered_json& context) const {
  return jinja::render(*program_, context);
}

}  // namespace ernie
