// The parser's expressions, following jinja2's parser function by function; see parser.h.
#include <memory>
#include <utility>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/parser.h"

namespace ernie::jinja {

ExprPtr Parser::parse_tuple(bool with_condexpr, bool explicit_parens) {
  const int at = line();
  std::vector<ExprPtr> items;
  bool is_tuple = false;
  while (true) {
    if (!items.empty()) expect_op(",");
    if (tuple_end()) break;
    items.push_back(parse_expression(with_condexpr));
    if (!is_op(",")) break;
    is_tuple = true;
  }
  if (!is_tuple) {
    if (!items.empty()) return std::move(items[0]);
    if (!explicit_parens) {
      if (at_end()) fail_at(tag_line_, "expected an expression");
      unexpected();
    }
  }
  auto e = make(EK::List, at);
  e->kids = std::move(items);
  return e;
}

ExprPtr Parser::parse_expression(bool with_condexpr) {
  return with_condexpr ? parse_condexpr() : parse_or();
}

ExprPtr Parser::parse_condexpr() {
  DepthGuard guard(expr_depth_, kMaxExprDepth, line(), "expressions");
  ExprPtr expr = parse_or();
  while (is_name("if")) {
    const int at = line();
    ++ti_;
    auto cond = make(EK::Cond, at);
    ExprPtr test = parse_or();
    ExprPtr otherwise;
    if (is_name("else")) {
      ++ti_;
      otherwise = parse_condexpr();
    }
    cond->kids.push_back(std::move(expr));
    cond->kids.push_back(std::move(test));
    cond->kids.push_back(std::move(otherwise));
    expr = std::move(cond);
  }
  return expr;
}

ExprPtr Parser::binary(EK kind, std::string op, ExprPtr left, ExprPtr right, int at) {
  auto e = make(kind, at);
  e->name = std::move(op);
  e->kids.push_back(std::move(left));
  e->kids.push_back(std::move(right));
  return e;
}

ExprPtr Parser::parse_or() {
  ExprPtr left = parse_and();
  while (is_name("or")) {
    const int at = line();
    ++ti_;
    left = binary(EK::Or, "or", std::move(left), parse_and(), at);
  }
  return left;
}

ExprPtr Parser::parse_and() {
  ExprPtr left = parse_not();
  while (is_name("and")) {
    const int at = line();
    ++ti_;
    left = binary(EK::And, "and", std::move(left), parse_not(), at);
  }
  return left;
}

ExprPtr Parser::parse_not() {
  if (is_name("not")) {
    DepthGuard guard(expr_depth_, kMaxExprDepth, line(), "expressions");
    auto e = make(EK::Not, line());
    ++ti_;
    e->kids.push_back(parse_not());
    return e;
  }
  return parse_compare();
}

ExprPtr Parser::parse_compare() {
  const int at = line();
  ExprPtr first = parse_math1();
  std::vector<std::string> ops;
  std::vector<ExprPtr> operands;
  while (true) {
    const Token* t = peek();
    if (t && t->kind == TokKind::Op &&
        (t->text == "==" || t->text == "!=" || t->text == "<" || t->text == ">" || t->text == "<=" ||
         t->text == ">=")) {
      ++ti_;
      ops.push_back(t->text);
    } else if (is_name("in")) {
      ++ti_;
      ops.push_back("in");
    } else if (is_name("not") && is_name("in", 1)) {
      ti_ += 2;
      ops.push_back("not in");
    } else {
      break;
    }
    operands.push_back(parse_math1());
  }
  if (ops.empty()) return first;
  auto e = make(EK::Compare, at);
  e->kids.push_back(std::move(first));
  for (auto& operand : operands) e->kids.push_back(std::move(operand));
  e->ops = std::move(ops);
  return e;
}

ExprPtr Parser::parse_math1() {
  ExprPtr left = parse_concat();
  while (is_op("+") || is_op("-")) {
    const int at = line();
    std::string op = peek()->text;
    ++ti_;
    left = binary(EK::Binary, std::move(op), std::move(left), parse_concat(), at);
  }
  return left;
}

ExprPtr Parser::parse_concat() {
  const int at = line();
  ExprPtr first = parse_math2();
  if (!is_op("~")) return first;
  auto e = make(EK::Concat, at);
  e->kids.push_back(std::move(first));
  while (is_op("~")) {
    ++ti_;
    e->kids.push_back(parse_math2());
  }
  return e;
}

ExprPtr Parser::parse_math2() {
  ExprPtr left = parse_pow();
  while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
    const int at = line();
    std::string op = peek()->text;
    ++ti_;
    left = binary(EK::Binary, std::move(op), std::move(left), parse_pow(), at);
  }
  return left;
}

ExprPtr Parser::parse_pow() {
  ExprPtr left = parse_unary(true);
  while (is_op("**")) {
    const int at = line();
    ++ti_;
    left = binary(EK::Binary, "**", std::move(left), parse_unary(true), at);
  }
  return left;
}

ExprPtr Parser::parse_unary(bool with_filter) {
  DepthGuard guard(expr_depth_, kMaxExprDepth, line(), "expressions");
  ExprPtr node;
  if (is_op("-") || is_op("+")) {
    auto e = make(is_op("-") ? EK::Neg : EK::Pos, line());
    ++ti_;
    e->kids.push_back(parse_unary(false));
    node = std::move(e);
  } else {
    node = parse_primary();
  }
  node = parse_postfix(std::move(node));
  if (with_filter) node = parse_filter_expr(std::move(node));
  return node;
}

ExprPtr Parser::constant(Json value, int at) {
  auto e = make(EK::Const, at);
  e->constant = std::make_shared<const Json>(std::move(value));
  return e;
}

ExprPtr Parser::parse_primary() {
  const Token* t = peek();
  if (!t) unexpected();
  const int at = t->line;
  switch (t->kind) {
    case TokKind::Name: {
      ++ti_;
      if (t->text == "true" || t->text == "True") return constant(Json(true), at);
      if (t->text == "false" || t->text == "False") return constant(Json(false), at);
      if (t->text == "none" || t->text == "None") return constant(Json(nullptr), at);
      auto e = make(EK::Name, at);
      e->name = t->text;
      return e;
    }
    case TokKind::String: {
      std::string s;
      while (peek() && peek()->kind == TokKind::String) s += peek()->value.get<std::string>(), ++ti_;
      return constant(Json(std::move(s)), at);
    }
    case TokKind::Int:
    case TokKind::Float: ++ti_; return constant(t->value, at);
    case TokKind::Op:
      if (t->text == "(") {
        ++ti_;
        ExprPtr e = parse_tuple(true, true);
        expect_op(")");
        return e;
      }
      if (t->text == "[") {
        ++ti_;
        auto e = make(EK::List, at);
        while (!is_op("]")) {
          if (!e->kids.empty()) {
            expect_op(",");
            if (is_op("]")) break;
          }
          e->kids.push_back(parse_expression(true));
        }
        expect_op("]");
        return e;
      }
      if (t->text == "{") {
        ++ti_;
        auto e = make(EK::Dict, at);
        while (!is_op("}")) {
          if (!e->kids.empty()) {
            expect_op(",");
            if (is_op("}")) break;
          }
          e->kids.push_back(parse_expression(true));
          expect_op(":");
          e->kids.push_back(parse_expression(true));
        }
        expect_op("}");
        return e;
      }
      break;
  }
  unexpected();
}

ExprPtr Parser::parse_postfix(ExprPtr node) {
  while (true) {
    if (is_op(".")) {
      const int at = line();
      ++ti_;
      const Token* t = peek();
      if (t && t->kind == TokKind::Name) {
        auto e = make(EK::Attr, at);
        e->name = t->text;
        e->kids.push_back(std::move(node));
        node = std::move(e);
        ++ti_;
      } else if (t && t->kind == TokKind::Int) {
        auto e = make(EK::Item, at);
        e->kids.push_back(std::move(node));
        e->kids.push_back(constant(t->value, at));
        node = std::move(e);
        ++ti_;
      } else {
        at_end() ? unexpected() : fail_at(line(), "expected a name or number after '.', got '", t->text, "'");
      }
    } else if (is_op("[")) {
      node = parse_subscript(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_filter_expr(ExprPtr node) {
  while (true) {
    if (is_op("|")) {
      node = parse_filter(std::move(node));
    } else if (is_name("is")) {
      node = parse_test(std::move(node));
    } else if (is_op("(")) {
      node = parse_call(std::move(node));
    } else {
      return node;
    }
  }
}

ExprPtr Parser::parse_subscript(ExprPtr node) {
  const int at = line();
  expect_op("[");
  std::vector<ExprPtr> args;
  bool slice = false;
  while (!is_op("]")) {
    if (!args.empty()) expect_op(",");
    if (slice || !args.empty()) fail_at(line(), "unsupported multi-dimensional subscript");
    // start? (: stop? (: step?)?)?
    ExprPtr start, stop, step;
    if (!is_op(":")) start = parse_expression(true);
    if (is_op(":")) {
      slice = true;
      ++ti_;
      if (!is_op(":") && !is_op("]") && !is_op(",")) stop = parse_expression(true);
      if (is_op(":")) {
        ++ti_;
        if (!is_op("]") && !is_op(",")) step = parse_expression(true);
      }
      args.push_back(std::move(start));
      args.push_back(std::move(stop));
      args.push_back(std::move(step));
    } else {
      args.push_back(std::move(start));
    }
  }
  expect_op("]");
  if (args.empty()) fail_at(at, "empty subscript");
  auto e = make(slice ? EK::Slice : EK::Item, at);
  e->kids.push_back(std::move(node));
  for (auto& arg : args) e->kids.push_back(std::move(arg));
  return e;
}

void Parser::parse_call_args(Expr& call) {
  const int at = line();
  expect_op("(");
  bool first = true;
  while (!is_op(")")) {
    if (!first) {
      expect_op(",");
      if (is_op(")")) break;
    }
    first = false;
    if (is_op("*") || is_op("**")) fail_at(line(), "unsupported '", peek()->text, "' argument unpacking");
    if (peek() && peek()->kind == TokKind::Name && is_op("=", 1)) {
      std::string name = peek()->text;
      ti_ += 2;
      call.kwargs.push_back({std::move(name), parse_expression(true)});
    } else {
      if (!call.kwargs.empty()) fail_at(at, "positional argument after keyword argument");
      call.kids.push_back(parse_expression(true));
    }
  }
  expect_op(")");
}

ExprPtr Parser::parse_call(ExprPtr callee) {
  auto e = make(EK::Call, line());
  e->kids.push_back(std::move(callee));
  parse_call_args(*e);
  return e;
}

ExprPtr Parser::parse_one_filter(ExprPtr subject) {
  const int at = line();
  std::string name = expect_name();
  if (!contains(kFilters, name)) {
    if (contains(kUnsupportedFilters, name)) fail_at(at, "unsupported filter '", name, "'");
    fail_at(at, "unknown filter '", name, "'");
  }
  auto e = make(EK::Filter, at);
  e->name = std::move(name);
  e->kids.push_back(std::move(subject));
  if (is_op("(")) parse_call_args(*e);
  return e;
}

ExprPtr Parser::parse_filter(ExprPtr node) {
  while (is_op("|")) {
    ++ti_;
    node = parse_one_filter(std::move(node));
  }
  return node;
}

std::vector<ExprPtr> Parser::parse_filter_chain() {
  std::vector<ExprPtr> chain;
  chain.push_back(parse_one_filter(nullptr));
  while (is_op("|")) {
    ++ti_;
    chain.push_back(parse_one_filter(nullptr));
  }
  return chain;
}

ExprPtr Parser::parse_test(ExprPtr node) {
  const int at = line();
  ++ti_;  // is
  bool negated = false;
  if (is_name("not")) {
    negated = true;
    ++ti_;
  }
  const int name_line = line();
  std::string name = expect_name();
  if (!contains(kTests, name)) fail_at(name_line, "unknown test '", name, "'");
  auto e = make(EK::Test, at);
  e->name = std::move(name);
  e->negated = negated;
  e->kids.push_back(std::move(node));
  const Token* t = peek();
  if (is_op("(")) {
    parse_call_args(*e);
  } else if (t &&
             (t->kind == TokKind::Name || t->kind == TokKind::String || t->kind == TokKind::Int ||
              t->kind == TokKind::Float || is_op("[") || is_op("{")) &&
             !is_name("else") && !is_name("or") && !is_name("and")) {
    // `x is divisibleby 3`: one argument without parentheses.
    if (is_name("is")) fail_at(line(), "cannot chain tests with 'is'");
    e->kids.push_back(parse_postfix(parse_primary()));
  }
  return e;
}

}  // namespace ernie::jinja
