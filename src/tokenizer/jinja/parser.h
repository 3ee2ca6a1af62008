// The parser turns the lexer's chunks (lexer.h) into the syntax tree (ast.h), following jinja2's grammar and
// precedence function by function. Syntax outside the supported subset — unknown or unsupported tags, filters
// and tests, recursive loops, *args — is an ernie::Error "chat template: <what> at line N", as is nesting of
// blocks or expressions beyond kMaxBlockDepth / kMaxExprDepth. One Parser parses one template, once.
// Statements are in parser.cpp, expressions in parser_expr.cpp.
#pragma once

#include <cstddef>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/lexer.h"

namespace ernie::jinja {

class Parser {
 public:
  explicit Parser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  // The whole template.
  Body parse_template();

 private:
  std::vector<Chunk> chunks_;
  size_t ci_ = 0;
  const std::vector<Token>* toks_ = nullptr;
  size_t ti_ = 0;
  int tag_line_ = 0;
  int expr_depth_ = 0;
  int block_depth_ = 0;
  int loop_depth_ = 0;

  struct DepthGuard {
    int& depth;
    DepthGuard(int& d, int limit, int line, const char* what) : depth(d) {
      if (++depth > limit) fail_at(line, what, " nested more than ", limit, " levels deep");
    }
    ~DepthGuard() { --depth; }
  };

  // ---- tokens of the current tag
  bool at_end() const { return ti_ >= toks_->size(); }
  const Token* peek(size_t ahead = 0) const { return ti_ + ahead < toks_->size() ? &(*toks_)[ti_ + ahead] : nullptr; }
  bool is_op(std::string_view op, size_t ahead = 0) const {
    const Token* t = peek(ahead);
    return t && t->kind == TokKind::Op && t->text == op;
  }
  bool is_name(std::string_view name, size_t ahead = 0) const {
    const Token* t = peek(ahead);
    return t && t->kind == TokKind::Name && t->text == name;
  }
  int line() const { return at_end() ? tag_line_ : (*toks_)[ti_].line; }
  [[noreturn]] void unexpected() const;
  void expect_op(std::string_view op);
  std::string expect_name();
  void expect_end();
  ExprPtr make(EK kind, int line);

  // ---- statements (parser.cpp)

  // Parses nodes into `body` until a tag whose keyword is in `ends`; returns that keyword with the token cursor
  // after it. Running out of template is an error unless `ends` is empty (the top level).
  std::string parse_body(Body& body, std::initializer_list<std::string_view> ends, std::string_view opener,
                         int open_line);
  void parse_statement(const std::string& keyword, Body& body, int tag_line);
  void parse_params(MacroDef& def);
  // A macro body is its own function: break/continue cannot reach a loop around the definition.
  void parse_macro_body(MacroDef& def, std::string_view opener, int tag_line);
  // Assignment targets: a name or names separated by commas, optionally in parentheses.
  Target parse_target(bool for_loop);

  // ---- expressions (parser_expr.cpp), following jinja2's parser function by function

  bool tuple_end() const { return at_end() || is_op(")"); }
  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens);
  ExprPtr parse_expression(bool with_condexpr);
  ExprPtr parse_condexpr();
  ExprPtr binary(EK kind, std::string op, ExprPtr left, ExprPtr right, int at);
  ExprPtr parse_or();
  ExprPtr parse_and();
  ExprPtr parse_not();
  ExprPtr parse_compare();
  ExprPtr parse_math1();
  ExprPtr parse_concat();
  ExprPtr parse_math2();
  ExprPtr parse_pow();
  // As in jinja2, unary minus binds tighter than filters: `-x|abs` is abs(-x).
  ExprPtr parse_unary(bool with_filter);
  ExprPtr constant(Json value, int at);
  ExprPtr parse_primary();
  ExprPtr parse_postfix(ExprPtr node);
  ExprPtr parse_filter_expr(ExprPtr node);
  ExprPtr parse_subscript(ExprPtr node);
  void parse_call_args(Expr& call);
  ExprPtr parse_call(ExprPtr callee);
  // One filter application at the cursor: name [(args)]. `subject` is null for block filters.
  ExprPtr parse_one_filter(ExprPtr subject);
  ExprPtr parse_filter(ExprPtr node);
  // `upper | replace('a', 'b')` after {% filter %} or {% set x | %}.
  std::vector<ExprPtr> parse_filter_chain();
  ExprPtr parse_test(ExprPtr node);
};

}  // namespace ernie::jinja
