// The parser's token cursor and statements; see parser.h.
#include "tokenizer/jinja/parser.h"

#include <memory>
#include <utility>

#include "core/error.h"
#include "tokenizer/jinja/builtins.h"

namespace ernie::jinja {

namespace {

const std::vector<std::string_view> kUnsupportedTags = {
    "autoescape", "block", "do", "extends", "from", "import", "include", "pluralize", "print", "recursive", "trans"};

}  // namespace

Body Parser::parse_template() {
  Body body;
  parse_body(body, {}, "", 0);
  return body;
}

void Parser::unexpected() const {
  if (at_end()) fail_at(tag_line_, "unexpected end of tag");
  fail_at(line(), "unexpected '", (*toks_)[ti_].text, "'");
}

void Parser::expect_op(std::string_view op) {
  if (!is_op(op)) {
    if (at_end()) fail_at(tag_line_, "expected '", op, "' before the end of the tag");
    fail_at(line(), "expected '", op, "', got '", (*toks_)[ti_].text, "'");
  }
  ++ti_;
}

std::string Parser::expect_name() {
  const Token* t = peek();
  if (!t || t->kind != TokKind::Name) {
    if (!t) fail_at(tag_line_, "expected a name before the end of the tag");
    fail_at(t->line, "expected a name, got '", t->text, "'");
  }
  ++ti_;
  return t->text;
}

void Parser::expect_end() {
  if (!at_end()) unexpected();
}

ExprPtr Parser::make(EK kind, int line) {
  auto e = std::make_unique<Expr>();
  e->kind = kind;
  e->line = line;
  return e;
}

std::string Parser::parse_body(Body& body, std::initializer_list<std::string_view> ends, std::string_view opener,
                               int open_line) {
  DepthGuard guard(block_depth_, kMaxBlockDepth, open_line, "blocks");
  while (ci_ < chunks_.size()) {
    Chunk& chunk = chunks_[ci_++];
    if (chunk.kind == ChunkKind::Text) {
      auto node = std::make_unique<Node>();
      node->kind = NK::Text;
      node->line = chunk.line;
      node->text = std::move(chunk.text);
      body.push_back(std::move(node));
      continue;
    }
    toks_ = &chunk.tokens;
    ti_ = 0;
    tag_line_ = chunk.line;
    if (chunk.kind == ChunkKind::Print) {
      auto node = std::make_unique<Node>();
      node->kind = NK::Print;
      node->line = chunk.line;
      node->expr = parse_tuple(true, false);
      expect_end();
      body.push_back(std::move(node));
      continue;
    }
    if (at_end()) fail_at(chunk.line, "empty tag '{% %}'");
    const Token& keyword = (*toks_)[0];
    if (keyword.kind != TokKind::Name) fail_at(keyword.line, "expected a tag name, got '", keyword.text, "'");
    ti_ = 1;
    for (const std::string_view end : ends)
      if (keyword.text == end) return keyword.text;
    parse_statement(keyword.text, body, chunk.line);
  }
  if (ends.size() != 0)
    fail("chat template: unclosed '{% ", opener, " %}' opened at line ", open_line, " (no '{% ", *ends.begin(),
         " %}')");
  return "";
}

void Parser::parse_statement(const std::string& keyword, Body& body, int tag_line) {
  auto node = std::make_unique<Node>();
  node->line = tag_line;
  if (keyword == "if") {
    node->kind = NK::If;
    ExprPtr condition = parse_tuple(false, false);
    while (true) {
      expect_end();
      Body branch;
      const std::string end = parse_body(branch, {"endif", "elif", "else"}, "if", tag_line);
      node->branches.emplace_back(std::move(condition), std::move(branch));
      if (end == "elif") {
        condition = parse_tuple(false, false);
        continue;
      }
      if (end == "else") {
        expect_end();
        Body else_branch;
        parse_body(else_branch, {"endif"}, "if", tag_line);
        node->branches.emplace_back(nullptr, std::move(else_branch));
      }
      expect_end();
      break;
    }
  } else if (keyword == "for") {
    node->kind = NK::For;
    node->target = parse_target(true);
    if (!is_name("in")) at_end() ? unexpected() : fail_at(line(), "expected 'in', got '", peek()->text, "'");
    ++ti_;
    node->expr = parse_tuple(false, false);
    if (is_name("if")) {
      ++ti_;
      node->filter = parse_expression(true);
    }
    if (is_name("recursive")) fail_at(line(), "unsupported recursive for loop");
    expect_end();
    ++loop_depth_;
    const std::string end = parse_body(node->body, {"endfor", "else"}, "for", tag_line);
    --loop_depth_;
    if (end == "else") {
      expect_end();
      parse_body(node->else_body, {"endfor"}, "for", tag_line);
    }
    expect_end();
  } else if (keyword == "set") {
    if (peek() && peek()->kind == TokKind::Name && is_op(".", 1)) {
      node->kind = NK::SetAttr;
      node->target.names.push_back(expect_name());
      ++ti_;
      node->text = expect_name();
    } else {
      node->kind = NK::Set;
      node->target = parse_target(false);
    }
    if (is_op("=")) {
      ++ti_;
      node->expr = parse_tuple(true, false);
      expect_end();
    } else if (at_end()) {
      // {% set x %}...{% endset %}: the rendered body is the value.
      if (node->kind == NK::SetAttr) {
        fail_at(tag_line, "unsupported block set of a namespace attribute");
      }
      node->kind = NK::SetBlock;
      const int saved = loop_depth_;
      loop_depth_ = 0;
      parse_body(node->body, {"endset"}, "set", tag_line);
      loop_depth_ = saved;
      expect_end();
    } else if (is_op("|")) {
      ++ti_;
      if (node->kind == NK::SetAttr) fail_at(tag_line, "unsupported block set of a namespace attribute");
      node->kind = NK::SetBlock;
      node->filters = parse_filter_chain();
      expect_end();
      const int saved = loop_depth_;
      loop_depth_ = 0;
      parse_body(node->body, {"endset"}, "set", tag_line);
      loop_depth_ = saved;
      expect_end();
    } else {
      unexpected();
    }
  } else if (keyword == "break" || keyword == "continue") {
    if (loop_depth_ == 0) fail_at(tag_line, "'", keyword, "' outside of a loop");
    node->kind = keyword == "break" ? NK::Break : NK::Continue;
    expect_end();
  } else if (keyword == "macro") {
    node->kind = NK::Macro;
    node->macro = std::make_unique<MacroDef>();
    node->macro->name = expect_name();
    parse_params(*node->macro);
    expect_end();
    parse_macro_body(*node->macro, "macro", tag_line);
  } else if (keyword == "call") {
    // {% call(args) m(...) %}body{% endcall %}: m runs with `caller` rendering the body.
    node->kind = NK::CallBlock;
    node->macro = std::make_unique<MacroDef>();
    node->macro->name = "caller";
    if (is_op("(")) parse_params(*node->macro);
    node->expr = parse_expression(true);
    if (node->expr->kind != EK::Call) fail_at(tag_line, "'{% call %}' needs a macro call");
    expect_end();
    parse_macro_body(*node->macro, "call", tag_line);
  } else if (keyword == "filter") {
    node->kind = NK::FilterBlock;
    node->filters = parse_filter_chain();
    expect_end();
    parse_body(node->body, {"endfilter"}, "filter", tag_line);
    expect_end();
  } else if (keyword == "with") {
    node->kind = NK::With;
    while (!at_end()) {
      if (!node->with_vars.empty()) expect_op(",");
      std::string name = expect_name();
      expect_op("=");
      node->with_vars.emplace_back(std::move(name), parse_expression(true));
    }
    parse_body(node->body, {"endwith"}, "with", tag_line);
    expect_end();
  } else if (keyword == "generation") {
    // transformers' tag marking assistant output; without assistant masks it renders its body.
    node->kind = NK::Generation;
    expect_end();
    parse_body(node->body, {"endgeneration"}, "generation", tag_line);
    expect_end();
  } else if (contains(kUnsupportedTags, keyword)) {
    fail_at(tag_line, "unsupported tag '{% ", keyword, " %}'");
  } else if (keyword.rfind("end", 0) == 0 || keyword == "elif" || keyword == "else") {
    fail_at(tag_line, "unexpected '{% ", keyword, " %}'");
  } else {
    fail_at(tag_line, "unsupported tag '{% ", keyword, " %}'");
  }
  body.push_back(std::move(node));
}

void Parser::parse_params(MacroDef& def) {
  expect_op("(");
  while (!is_op(")")) {
    if (!def.params.empty()) {
      expect_op(",");
      if (is_op(")")) break;
    }
    std::string param = expect_name();
    ExprPtr fallback;
    if (is_op("=")) {
      ++ti_;
      fallback = parse_expression(true);
    }
    def.params.emplace_back(std::move(param), std::move(fallback));
  }
  expect_op(")");
}

void Parser::parse_macro_body(MacroDef& def, std::string_view opener, int tag_line) {
  const int saved = loop_depth_;
  loop_depth_ = 0;
  const std::string_view end = opener == "macro" ? "endmacro" : "endcall";
  parse_body(def.body, {end}, opener, tag_line);
  loop_depth_ = saved;
  expect_end();
}

Target Parser::parse_target(bool for_loop) {
  Target target;
  const bool paren = is_op("(");
  if (paren) ++ti_;
  while (true) {
    const int at = line();
    std::string name = expect_name();
    if (name == "true" || name == "false" || name == "none" || name == "True" || name == "False" || name == "None")
      fail_at(at, "cannot assign to '", name, "'");
    target.names.push_back(std::move(name));
    if (!is_op(",")) break;
    ++ti_;
    target.unpack = true;
    if ((paren && is_op(")")) || (!paren && (at_end() || is_op("=") || (for_loop && is_name("in"))))) break;
  }
  if (paren) expect_op(")");
  return target;
}

}  // namespace ernie::jinja
