// Statements, expressions and macro calls; see render.h.
#include "tokenizer/jinja/render.h"

#include <algorithm>
#include <cstdint>
#include <exception>
#include <string_view>
#include <utility>
#include <vector>

#include "core/error.h"
#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

namespace {

Value lookup(const std::shared_ptr<Scope>& scope, const std::string& name) {
  for (const Scope* s = scope.get(); s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  if (contains(kBuiltins, name)) return Value::builtin(name);
  return Value::undefined("'" + name + "' is undefined");
}

// Roughly the bytes `j` occupies: 16 per element (a JSON node) plus its strings' bytes (keys too), counted until the
// count passes `limit`, so that counting costs no more than the copy it is charged for.
uint64_t data_units(const Json& j, uint64_t limit) {
  constexpr uint64_t kNodeUnits = 16;
  uint64_t units = 0;
  std::vector<const Json*> todo = {&j};
  while (!todo.empty() && units <= limit) {
    const Json* x = todo.back();
    todo.pop_back();
    units += kNodeUnits;
    if (x->is_string()) {
      units += x->get_ref<const std::string&>().size();
    } else if (x->is_object()) {
      for (const auto& [key, item] : x->items()) {
        units += key.size();
        todo.push_back(&item);
      }
    } else if (x->is_array()) {
      for (const auto& item : *x) todo.push_back(&item);
    }
  }
  return units;
}

// Expressions whose value is new data (built, copied or computed) rather than a view of existing data.
bool builds_data(EK kind) {
  switch (kind) {
    // List and dict displays charge each element before copying it in (so a doubling list fails before it is built).
    case EK::Slice: case EK::Call: case EK::Filter: case EK::Binary: case EK::Concat:
      return true;
    default:
      return false;
  }
}

}  // namespace

Renderer::~Renderer() {
  for (const auto& ns : namespaces_) ns->attrs.clear();
}

void Renderer::step(int line) {
  if (++steps_ > kMaxRenderSteps) step_limit(line);
}

void Renderer::step_limit(int line) {
  fail_at(line, "rendering takes more than ", kMaxRenderSteps, " steps (a loop or recursion that does not end?)");
}

void Renderer::charge_data(uint64_t units, int line) {
  data_ += units;
  if (data_ > kMaxRenderData) fail_at(line, "rendering builds more than ", kMaxRenderData, " bytes of data");
}

void Renderer::charge_built(const Value& v, int line) {
  if (v.is_data()) charge_data(data_units(v.j(), kMaxRenderData - std::min(data_, kMaxRenderData)), line);
}

void Renderer::write(std::string& out, std::string_view text, int line) {
  charge_data(text.size(), line);
  if (out.size() + text.size() > kMaxOutputBytes) fail_at(line, "template output exceeds ", kMaxOutputBytes, " bytes");
  out += text;
}

Flow Renderer::exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out) {
  for (const auto& node_ptr : body) {
    const Node& node = *node_ptr;
    step(node.line);
    switch (node.kind) {
      case NK::Text: write(out, node.text, node.line); break;
      case NK::Print: {
        std::string text;
        append_str(eval(*node.expr, scope), text, node.line);
        write(out, text, node.line);
        break;
      }
      case NK::If:
        for (const auto& [condition, branch] : node.branches) {
          if (!condition || truthy(eval(*condition, scope))) {
            const Flow flow = exec(branch, scope, out);
            if (flow != Flow::Normal) return flow;
            break;
          }
        }
        break;
      case NK::For: exec_for(node, scope, out); break;
      case NK::Set: assign(node.target, eval(*node.expr, scope), *scope, node.line); break;
      case NK::SetAttr: {
        const Value ns = lookup(scope, node.target.names[0]);
        if (ns.kind != Value::Kind::Namespace) fail_at(node.line, "cannot assign attribute on non-namespace object");
        Value value = eval(*node.expr, scope);
        if (Value* slot = ns.ns->find(node.text)) {
          *slot = std::move(value);
        } else {
          ns.ns->attrs.emplace_back(node.text, std::move(value));
        }
        break;
      }
      case NK::SetBlock: {
        std::string text;
        exec(node.body, scope, text);
        assign(node.target, apply_filters(node.filters, str_value(text), scope), *scope, node.line);
        break;
      }
      case NK::FilterBlock: {
        std::string text;
        const Flow flow = exec(node.body, scope, text);
        std::string filtered;
        append_str(apply_filters(node.filters, str_value(text), scope), filtered, node.line);
        write(out, filtered, node.line);
        if (flow != Flow::Normal) return flow;
        break;
      }
      case NK::Break: return Flow::Break;
      case NK::Continue: return Flow::Continue;
      case NK::Macro: {
        Value macro;
        macro.kind = Value::Kind::Macro;
        macro.macro = std::make_shared<const MacroRef>(MacroRef{node.macro.get(), scope});
        scope->vars[node.macro->name] = std::move(macro);
        break;
      }
      case NK::CallBlock: {
        const Expr& call = *node.expr;
        const Value f = eval(*call.kids[0], scope);
        const Args args = eval_args(call, 1, scope);
        if (f.kind != Value::Kind::Macro) {
          if (f.undef()) fail_undefined(f, node.line);
          fail_at(node.line, "'{% call %}' needs a macro, not '", type_name(f), "'");
        }
        Value caller;
        caller.kind = Value::Kind::Macro;
        caller.macro = std::make_shared<const MacroRef>(MacroRef{node.macro.get(), scope});
        std::string text;
        append_str(call_macro(*f.macro, args, node.line, &caller), text, node.line);
        write(out, text, node.line);
        break;
      }
      case NK::With: {
        auto inner = std::make_shared<Scope>();
        inner->parent = scope;
        for (const auto& [name, expr] : node.with_vars) inner->vars[name] = eval(*expr, scope);
        const Flow flow = exec(node.body, inner, out);
        if (flow != Flow::Normal) return flow;
        break;
      }
      case NK::Generation: {
        const Flow flow = exec(node.body, scope, out);
        if (flow != Flow::Normal) return flow;
        break;
      }
    }
  }
  return Flow::Normal;
}

void Renderer::assign(const Target& target, const Value& value, Scope& scope, int line) {
  if (!target.unpack) {
    scope.vars[target.names[0]] = value;
    return;
  }
  const std::vector<Value> items = iterate(value, line);
  if (items.size() != target.names.size()) {
    if (items.size() > target.names.size())
      fail_at(line, "too many values to unpack (expected ", target.names.size(), ")");
    fail_at(line, "not enough values to unpack (expected ", target.names.size(), ", got ", items.size(), ")");
  }
  for (size_t i = 0; i < items.size(); ++i) scope.vars[target.names[i]] = items[i];
}

// Each iteration runs in a fresh scope: jinja2 neither carries a {% set %} from one iteration to the next nor
// lets it out of the loop (namespace attributes are how templates accumulate).
Flow Renderer::exec_for(const Node& node, const std::shared_ptr<Scope>& scope, std::string& out) {
  const Value iterable = eval(*node.expr, scope);
  // Every item costs a step: refuse a sequence longer than the steps left before building its items.
  if (iterable.is_data() && (iterable.j().is_structured() || iterable.j().is_string())) {
    const size_t n = iterable.j().is_string() ? iterable.j().get_ref<const std::string&>().size() : iterable.j().size();
    if (steps_ + n > kMaxRenderSteps) step_limit(node.line);
  }
  std::vector<Value> items = iterate(iterable, node.line);
  if (node.filter) {
    std::vector<Value> kept;
    for (auto& item : items) {
      auto probe = std::make_shared<Scope>();
      probe->parent = scope;
      assign(node.target, item, *probe, node.line);
      if (truthy(eval(*node.filter, probe))) kept.push_back(std::move(item));
    }
    items = std::move(kept);
  }
  if (items.empty()) {
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    return exec(node.else_body, inner, out);
  }
  const size_t n = items.size();
  for (size_t i = 0; i < n; ++i) {
    step(node.line);
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    assign(node.target, items[i], *inner, node.line);
    Json loop = {{"index", i + 1},  {"index0", i},        {"revindex", n - i}, {"revindex0", n - i - 1},
                 {"first", i == 0}, {"last", i + 1 == n}, {"length", n},       {"depth", 1},
                 {"depth0", 0}};
    // The neighbouring items are copies: charged as data (the fixed fields are not, they are freed each pass).
    if (i > 0) {
      charge_built(items[i - 1], node.line);
      loop["previtem"] = to_element(items[i - 1], node.line);
    }
    if (i + 1 < n) {
      charge_built(items[i + 1], node.line);
      loop["nextitem"] = to_element(items[i + 1], node.line);
    }
    Value loop_value = Value::data(std::move(loop));
    loop_value.is_loop = true;
    inner->vars["loop"] = std::move(loop_value);
    if (exec(node.body, inner, out) == Flow::Break) break;
  }
  return Flow::Normal;
}

Args Renderer::eval_args(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope) {
  Args args;
  for (size_t i = first; i < e.kids.size(); ++i) args.pos.push_back(eval(*e.kids[i], scope));
  for (const auto& kw : e.kwargs) args.kw.emplace_back(kw.name, eval(*kw.value, scope));
  return args;
}

Value Renderer::eval(const Expr& e, const std::shared_ptr<Scope>& scope) {
  step(e.line);
  Value v = eval_node(e, scope);
  if (builds_data(e.kind)) charge_built(v, e.line);
  return v;
}

Value Renderer::eval_node(const Expr& e, const std::shared_ptr<Scope>& scope) {
  switch (e.kind) {
    case EK::Const: return Value::shared(e.constant);
    case EK::Name: return lookup(scope, e.name);
    case EK::List: {
      Json out = Json::array();
      for (const auto& kid : e.kids) {
        const Value item = eval(*kid, scope);
        charge_built(item, e.line);
        out.push_back(to_element(item, e.line));
      }
      return Value::data(std::move(out));
    }
    case EK::Dict: {
      Json out = Json::object();
      for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
        const Value key = eval(*e.kids[i], scope);
        if (!is_str(key)) fail_at(e.line, "dict keys must be strings, not '", type_name(key), "'");
        const Value item = eval(*e.kids[i + 1], scope);
        charge_built(item, e.line);
        out[key.j().get<std::string>()] = to_element(item, e.line);
      }
      return Value::data(std::move(out));
    }
    case EK::Attr: return get_attr(eval(*e.kids[0], scope), e.name, e.line);
    case EK::Item: {
      const Value obj = eval(*e.kids[0], scope);
      return get_item(obj, eval(*e.kids[1], scope), e.line);
    }
    case EK::Slice: {
      const Value obj = eval(*e.kids[0], scope);
      if (obj.undef()) fail_undefined(obj, e.line);
      std::optional<int64_t> bounds[3];
      for (size_t k = 0; k < 3; ++k) {
        if (!e.kids[k + 1]) continue;
        const Value v = eval(*e.kids[k + 1], scope);
        if (is_none(v)) continue;
        if (!v.is_data() || !is_int(v.j())) return Value::undefined("slice indices must be integers or None");
        bounds[k] = int_of(v.j(), e.line);
      }
      if (!obj.is_data() || !(obj.j().is_array() || obj.j().is_string()))
        return Value::undefined("'" + type_name(obj) + "' object is not subscriptable");
      if (obj.j().is_array()) {
        Json out = Json::array();
        for (const size_t i : slice_indices(obj.j().size(), bounds[0], bounds[1], bounds[2], e.line))
          out.push_back(obj.j()[i]);
        return Value::data(std::move(out));
      }
      const auto units = units_of(obj.j().get_ref<const std::string&>());
      std::string out;
      for (const size_t i : slice_indices(units.size(), bounds[0], bounds[1], bounds[2], e.line)) out += units[i];
      return str_value(out);
    }
    case EK::Call: return eval_call(e, scope);
    case EK::Filter: {
      const Value subject = eval(*e.kids[0], scope);
      return filter(e.name, subject, eval_args(e, 1, scope), e.line);
    }
    case EK::Test: {
      const Value subject = eval(*e.kids[0], scope);
      const bool result = test(e.name, subject, eval_args(e, 1, scope), e.line);
      return Value::data(Json(result != e.negated));
    }
    case EK::Neg:
    case EK::Pos: {
      const Value v = eval(*e.kids[0], scope);
      if (v.undef()) fail_undefined(v, e.line);
      if (!v.is_data() || !is_num(v.j()))
        fail_at(e.line, "bad operand type for unary ", e.kind == EK::Neg ? "-" : "+", ": '", type_name(v), "'");
      if (v.j().is_number_float())
        return Value::data(Json(e.kind == EK::Neg ? -v.j().get<double>() : v.j().get<double>()));
      const int64_t x = int_of(v.j(), e.line);
      if (e.kind == EK::Pos) return Value::data(Json(x));
      return Value::data(Json(negate(x, e.line)));
    }
    case EK::Not: return Value::data(Json(!truthy(eval(*e.kids[0], scope))));
    case EK::Binary: {
      const Value a = eval(*e.kids[0], scope);
      return arithmetic(e.name, a, eval(*e.kids[1], scope), e.line);
    }
    case EK::Concat: {
      std::string out;
      for (const auto& kid : e.kids) {
        append_str(eval(*kid, scope), out, e.line);
        check_size(out.size(), e.line);
      }
      return str_value(out);
    }
    case EK::And: {
      Value a = eval(*e.kids[0], scope);
      return truthy(a) ? eval(*e.kids[1], scope) : a;
    }
    case EK::Or: {
      Value a = eval(*e.kids[0], scope);
      return truthy(a) ? a : eval(*e.kids[1], scope);
    }
    case EK::Compare: {
      Value left = eval(*e.kids[0], scope);
      for (size_t i = 0; i < e.ops.size(); ++i) {
        Value right = eval(*e.kids[i + 1], scope);
        if (!compare(e.ops[i], left, right, e.line)) return Value::data(Json(false));
        left = std::move(right);
      }
      return Value::data(Json(true));
    }
    case EK::Cond:
      if (truthy(eval(*e.kids[1], scope))) return eval(*e.kids[0], scope);
      if (e.kids[2]) return eval(*e.kids[2], scope);
      return Value::undefined("the inline if-expression evaluated to false and no else section was defined");
  }
  fail_at(e.line, "internal error: unknown expression");
}

Value Renderer::eval_call(const Expr& e, const std::shared_ptr<Scope>& scope) {
  const Expr& callee = *e.kids[0];
  if (callee.kind == EK::Attr) {
    const Value obj = eval(*callee.kids[0], scope);
    const Args args = eval_args(e, 1, scope);
    if (obj.undef()) fail_undefined(obj, e.line);
    if (obj.kind == Value::Kind::Namespace) {
      const Value* member = obj.ns->find(callee.name);
      if (!member) fail_at(e.line, missing_attr(obj, callee.name));
      return call_value(*member, args, e.line);
    }
    if (obj.is_loop && callee.name == "cycle") {
      if (args.pos.empty()) fail_at(e.line, "no items for cycling given");
      const auto index = obj.j()["index0"].get<size_t>();
      return args.pos[index % args.pos.size()];
    }
    if (!obj.is_data()) fail_at(e.line, missing_attr(obj, callee.name));
    return call_method(obj, callee.name, args, e.line);
  }
  const Value f = eval(callee, scope);
  return call_value(f, eval_args(e, 1, scope), e.line);
}

Value Renderer::call_value(const Value& f, const Args& args, int line) {
  switch (f.kind) {
    case Value::Kind::Undefined: fail_undefined(f, line);
    case Value::Kind::Macro: return call_macro(*f.macro, args, line);
    case Value::Kind::Builtin: return call_builtin(f.text, args, line);
    default: fail_at(line, "'", type_name(f), "' object is not callable");
  }
}

Value Renderer::call_macro(const MacroRef& macro, const Args& args, int line, const Value* caller) {
  const MacroDef& def = *macro.def;
  if (macro_depth_ >= kMaxMacroDepth) fail_at(line, "macro calls nested more than ", kMaxMacroDepth, " deep");
  const auto closure = macro.closure.lock();
  if (!closure) fail_at(line, "macro '", def.name, "' called after the scope defining it ended");
  if (args.pos.size() > def.params.size())
    fail_at(line, "macro '", def.name, "' takes not more than ", def.params.size(), " argument(s)");
  for (const auto& [key, value] : args.kw) {
    size_t index = 0;
    while (index < def.params.size() && def.params[index].first != key) ++index;
    if (index == def.params.size()) fail_at(line, "macro '", def.name, "' takes no keyword argument '", key, "'");
    if (index < args.pos.size()) fail_at(line, "macro '", def.name, "' got multiple values for argument '", key, "'");
  }
  auto scope = std::make_shared<Scope>();
  scope->parent = closure;
  if (caller) scope->vars["caller"] = *caller;
  for (size_t i = 0; i < def.params.size(); ++i) {
    const auto& [name, fallback] = def.params[i];
    std::optional<Value> value;
    if (i < args.pos.size()) value = args.pos[i];
    for (const auto& [key, given] : args.kw)
      if (key == name) value = given;
    if (!value)
      value = fallback ? eval(*fallback, scope) : Value::undefined("parameter '" + name + "' was not provided");
    scope->vars[name] = std::move(*value);
  }
  ++macro_depth_;
  std::string out;
  try {
    exec(def.body, scope, out);
  } catch (...) {
    --macro_depth_;
    throw;
  }
  --macro_depth_;
  return str_value(out);
}

namespace {

// The context arrives as nlohmann::json or ordered_json; rendering works on ordered_json so template-built
// dicts keep insertion order. Converting here also bounds the nesting the renderer will ever walk.
template <class In>
Json convert(const In& j, int depth) {
  if (depth > kMaxDataDepth) fail("chat template: context nested more than ", kMaxDataDepth, " levels deep");
  switch (j.type()) {
    case In::value_t::object: {
      Json out = Json::object();
      for (const auto& [key, item] : j.items()) out.emplace(key, convert(item, depth + 1));
      return out;
    }
    case In::value_t::array: {
      Json out = Json::array();
      for (const auto& item : j) out.push_back(convert(item, depth + 1));
      return out;
    }
    case In::value_t::string: return Json(j.template get<std::string>());
    case In::value_t::boolean: return Json(j.template get<bool>());
    case In::value_t::number_integer: return Json(j.template get<int64_t>());
    case In::value_t::number_unsigned: return Json(j.template get<uint64_t>());
    case In::value_t::number_float: return Json(j.template get<double>());
    case In::value_t::null: return Json(nullptr);
    case In::value_t::discarded: return Json(Json::value_t::discarded);
    case In::value_t::binary: break;
  }
  fail("chat template: context holds binary data, which templates cannot use");
}

template <class In>
std::string render_context(const Program& program, const In& context) {
  if (!context.is_object() && !context.is_null())
    fail("chat template: the render context must be a JSON object, not ", context.type_name());
  try {
    const auto data = std::make_shared<const Json>(convert(context, 0));
    auto root = std::make_shared<Scope>();
    if (data->is_object()) {
      const Value whole = Value::shared(data);
      for (const auto& [key, item] : data->items()) root->vars[key] = whole.child(item);
    }
    std::string out;
    Renderer().exec(program.body, root, out);
    return out;
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    fail_line(std::string("chat template: ") + e.what());
  }
}

}  // namespace

std::string render(const Program& program, const nlohmann::json& context) {
  return render_context(program, context);
}

std::string render(const Program& program, const nlohmann::ordered_json& context) {
  return render_context(program, context);
}

}  // namespace ernie::jinja
