// The template's syntax tree: built by the parser (parser.h), walked by the renderer (render.h), immutable in
// between. A Program is shared by every copy of a ChatTemplate and read by concurrent renders.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "tokenizer/jinja/common.h"

namespace ernie::jinja {

struct Expr;
using ExprPtr = std::unique_ptr<Expr>;

enum class EK {
  Const,
  Name,
  List,
  Dict,
  Attr,
  Item,
  Slice,
  Call,
  Filter,
  Test,
  Neg,
  Pos,
  Not,
  Binary,
  Concat,
  And,
  Or,
  Compare,
  Cond
};

struct Kwarg {
  std::string name;
  ExprPtr value;
};

struct Expr {
  EK kind;
  int line = 0;
  std::shared_ptr<const Json> constant;  // Const
  std::string name;                      // Name, Attr, Filter, Test, Binary operator
  // Attr [object]; Item [object, key]; Slice [object, start, stop, step] (any but the object may be null);
  // Call [callee, args...]; Filter / Test [subject, args...]; Dict [key, value, key, value...];
  // Cond [then, condition, else-or-null]; Compare [first, operands...].
  std::vector<ExprPtr> kids;
  std::vector<Kwarg> kwargs;
  std::vector<std::string> ops;  // Compare
  bool negated = false;          // Test
};

struct Node;
using NodePtr = std::unique_ptr<Node>;
using Body = std::vector<NodePtr>;

enum class NK {
  Text,
  Print,
  If,
  For,
  Set,
  SetAttr,
  SetBlock,
  Break,
  Continue,
  Macro,
  CallBlock,
  FilterBlock,
  With,
  Generation
};

struct Target {
  std::vector<std::string> names;
  bool unpack = false;  // `a, b` rather than `a`
};

struct MacroDef {
  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  Body body;
};

struct Node {
  NK kind;
  int line = 0;
  std::string text;                                // Text; SetAttr: the attribute
  ExprPtr expr;                                    // Print; Set / SetAttr value; For iterable
  ExprPtr filter;                                  // For: the `if` filter
  Target target;                                   // Set, SetBlock, For; SetAttr: names[0] is the namespace
  std::vector<std::pair<ExprPtr, Body>> branches;  // If; a null condition is the else branch
  Body body, else_body;
  std::vector<std::pair<std::string, ExprPtr>> with_vars;
  std::unique_ptr<MacroDef> macro;  // Macro; CallBlock: the body, callable as caller()
  std::vector<ExprPtr> filters;     // FilterBlock, SetBlock: applied in order to the rendered body (subjectless)
};

struct Program {
  Body body;
};

}  // namespace ernie::jinja
