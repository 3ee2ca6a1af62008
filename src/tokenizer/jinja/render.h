// The renderer walks a Program (ast.h) with Python value semantics (value.h). One Renderer serves one render()
// call — it holds the macro call depth — so it is never shared between threads; the Program it reads is.
// Its members are spread by role: statements, expressions and macro calls in render.cpp; global functions and
// methods in builtins.cpp; filters and tests in filters.cpp. Every fault raises ernie::Error at its line.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tokenizer/jinja/ast.h"
#include "tokenizer/jinja/value.h"

namespace ernie::jinja {

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  Renderer() = default;
  Renderer(const Renderer&) = delete;
  Renderer& operator=(const Renderer&) = delete;
  // Empties the namespaces the render created: {% set ns.me = ns %} makes a namespace own itself, a cycle that
  // shared_ptr alone would leak.
  ~Renderer();

  Flow exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  Value eval(const Expr& e, const std::shared_ptr<Scope>& scope);

 private:
  int macro_depth_ = 0;
  uint64_t steps_ = 0;  // against kMaxRenderSteps
  uint64_t data_ = 0;   // against kMaxRenderData
  std::vector<std::shared_ptr<Namespace>> namespaces_;  // every namespace() of this render

  // Count work against the render's budgets (common.h); fail once one is spent.
  void step(int line);
  [[noreturn]] void step_limit(int line);
  void charge_data(uint64_t units, int line);
  void charge_built(const Value& v, int line);  // charges what the data of `v` holds (bounded count)
  void write(std::string& out, std::string_view text, int line);  // appends, charging and bounding the output
  Value eval_node(const Expr& e, const std::shared_ptr<Scope>& scope);

  // render.cpp
  Flow exec_for(const Node& node, const std::shared_ptr<Scope>& scope, std::string& out);
  void assign(const Target& target, const Value& value, Scope& scope, int line);
  Args eval_args(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope);
  Value eval_call(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value call_value(const Value& f, const Args& args, int line);
  Value call_macro(const MacroRef& macro, const Args& args, int line, const Value* caller = nullptr);
  Value apply_filters(const std::vector<ExprPtr>& chain, Value v, const std::shared_ptr<Scope>& scope) {
    for (const auto& f : chain) v = filter(f->name, v, eval_args(*f, 1, scope), f->line);
    return v;
  }

  // builtins.cpp: global functions by name; methods of str, dict and list data (`obj` holds data).
  Value call_builtin(const std::string& name, const Args& args, int line);
  Value call_method(const Value& obj, const std::string& name, const Args& args, int line);

  // filters.cpp
  Value filter(const std::string& name, const Value& v, const Args& args, int line);
  bool test(const std::string& name, const Value& v, const Args& args, int line);
  // jinja2's make_attrgetter: "a.b.0" walks items, digit parts as list indices.
  Value attr_path(const Value& item, const Value& attribute, int line);
  std::vector<Value> select(const std::string& fn, const Value& seq, const Args& args, bool by_attr, bool keep,
                            int line);
  std::vector<Value> sorted(const std::vector<Value>& items, bool case_sensitive, const std::optional<Value>& attribute,
                            int line);
};

// Renders `program` with the top-level keys of `context` (an object, or null for none) as its variables, as
// ChatTemplate::render() documents. Any failure is an ernie::Error.
std::string render(const Program& program, const nlohmann::json& context);
std::string render(const Program& program, const nlohmann::ordered_json& context);

}  // namespace ernie::jinja
