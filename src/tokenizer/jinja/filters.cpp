// Filters and tests, following jinja2's definitions (jinja2/filters.py, jinja2/tests.py), as Renderer members;
// the names are listed in builtins.h.
#include <algorithm>
#include <charconv>
#include <cmath>

#include "tokenizer/jinja/builtins.h"
#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/render.h"
#include "tokenizer/jinja/text.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

Value Renderer::attr_path(const Value& item, const Value& attribute, int line) {
  if (attribute.is_data() && is_int(attribute.j())) return get_item(item, attribute, line);
  const std::string& path = str_arg(attribute, "attribute", line);
  Value current = item;
  for (size_t start = 0;;) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const auto index = part.empty() ? std::nullopt : parse_py_int(part);
    const bool numeric = index && std::all_of(part.begin(), part.end(), [](char c) { return c >= '0' && c <= '9'; });
    current = get_item(current, numeric ? Value::data(Json(*index)) : str_value(part), line);
    if (dot == std::string::npos) return current;
    start = dot + 1;
  }
}

std::vector<Value> Renderer::select(const std::string& fn, const Value& seq, const Args& args, bool by_attr, bool keep,
                                    int line) {
  size_t next = 0;
  std::optional<Value> attribute;
  if (by_attr) {
    if (args.pos.empty()) fail_at(line, fn, "() missing the attribute name");
    attribute = args.pos[next++];
  }
  std::optional<std::string> test_name;
  if (next < args.pos.size()) {
    test_name = str_arg(args.pos[next++], "test name", line);
    if (!contains(kTests, *test_name)) fail_at(line, "unknown test '", *test_name, "'");
  }
  Args test_args;
  test_args.pos.assign(args.pos.begin() + static_cast<std::ptrdiff_t>(next), args.pos.end());
  test_args.kw = args.kw;
  std::vector<Value> out;
  for (auto& item : iterate(seq, line)) {
    const Value subject = attribute ? attr_path(item, *attribute, line) : item;
    const bool pass = test_name ? test(*test_name, subject, test_args, line) : truthy(subject);
    if (pass == keep) out.push_back(std::move(item));
  }
  return out;
}

namespace {

// Keys for sort/unique/min/max: the item or its attribute, lower-cased unless case_sensitive.
std::vector<Value> sort_keys(Renderer& r, const std::vector<Value>& items, bool case_sensitive,
                             const std::optional<Value>& attribute, int line,
                             Value (Renderer::*getter)(const Value&, const Value&, int)) {
  std::vector<Value> keys;
  keys.reserve(items.size());
  for (const auto& item : items) {
    Value key = attribute && !is_none(*attribute) ? (r.*getter)(item, *attribute, line) : item;
    if (!case_sensitive && is_str(key)) key = str_value(py_lower(key.j().get_ref<const std::string&>()));
    keys.push_back(std::move(key));
  }
  return keys;
}

}  // namespace

std::vector<Value> Renderer::sorted(const std::vector<Value>& items, bool case_sensitive,
                                    const std::optional<Value>& attribute, int line) {
  const auto keys = sort_keys(*this, items, case_sensitive, attribute, line, &Renderer::attr_path);
  std::vector<size_t> order(items.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return py_cmp(keys[a], keys[b], "<", line) < 0; });
  std::vector<Value> out;
  out.reserve(items.size());
  for (const size_t i : order) out.push_back(items[i]);
  return out;
}

Value Renderer::filter(const std::string& name, const Value& v, const Args& args, int line) {
  const std::string& fn = name;
  const auto no_args = [&] { bind(args, {}, fn, line); };
  if (name == "default" || name == "d") {
    const Bound a = bind(args, {"default_value", "boolean"}, fn, line);
    const bool boolean = a[1] && truthy(*a[1]);
    if (v.undef() || (boolean && !truthy(v))) return a[0] ? *a[0] : str_value("");
    return v;
  }
  if (name == "length" || name == "count") {
    no_args();
    if (v.undef()) return Value::data(Json(0));
    if (v.is_data()) {
      const Json& j = v.j();
      if (j.is_string()) return Value::data(Json(count_units(j.get_ref<const std::string&>())));
      if (j.is_array() || j.is_object()) return Value::data(Json(j.size()));
    }
    fail_at(line, "object of type '", type_name(v), "' has no len()");
  }
  if (name == "string" || name == "safe") {
    no_args();
    return str_value(to_str(v, line));
  }
  if (name == "escape" || name == "e" || name == "forceescape") {
    no_args();
    return str_value(html_escape(to_str(v, line)));
  }
  if (name == "upper" || name == "lower" || name == "capitalize" || name == "title") {
    no_args();
    const std::string s = to_str(v, line);
    return str_value(name == "upper"   ? py_upper(s)
                     : name == "lower" ? py_lower(s)
                     : name == "title" ? jinja_title(s)
                                       : py_capitalize(s));
  }
  if (name == "trim") {
    const Bound a = bind(args, {"chars"}, fn, line);
    return str_value(py_strip(to_str(v, line), opt_str(a[0], "trim chars", line), true, true));
  }
  if (name == "replace") {
    const Bound a = bind(args, {"old", "new", "count"}, fn, line);
    const std::string old = to_str(required(a, 0, "old", fn, line), line);
    const std::string replacement = to_str(required(a, 1, "new", fn, line), line);
    const int64_t count = a[2] && !is_none(*a[2]) ? int_arg(*a[2], "replace count", line) : -1;
    return str_value(py_replace(to_str(v, line), old, replacement, count, line));
  }
  if (name == "first" || name == "last") {
    no_args();
    const auto items = iterate(v, line);
    if (items.empty()) return Value::undefined(std::string("No ") + name + " item, sequence was empty.");
    return name == "first" ? items.front() : items.back();
  }
  if (name == "list") {
    no_args();
    return list_value(iterate(v, line), line);
  }
  if (name == "join") {
    const Bound a = bind(args, {"d", "attribute"}, fn, line);
    const std::string sep = a[0] ? to_str(*a[0], line) : std::string();
    std::string out;
    bool first = true;
    for (const auto& item : iterate(v, line)) {
      if (!first) out += sep;
      first = false;
      append_str(a[1] && !is_none(*a[1]) ? attr_path(item, *a[1], line) : item, out, line);
      check_size(out.size(), line);
    }
    return str_value(out);
  }
  if (name == "int") {
    const Bound a = bind(args, {"default", "base"}, fn, line);
    const Value fallback = a[0] ? *a[0] : Value::data(Json(0));
    const int64_t base = a[1] ? int_arg(*a[1], "int base", line) : 10;
    if (base < 2 || base > 36) fail_at(line, "int() base must be between 2 and 36");
    if (v.undef()) fail_undefined(v, line);
    if (!v.is_data()) return fallback;
    const Json& j = v.j();
    std::optional<double> as_float;
    if (j.is_string()) {
      const std::string& s = j.get_ref<const std::string&>();
      if (base == 10) {
        if (const auto i = parse_py_int(s)) return Value::data(Json(*i));
      } else {
        std::string digits = without_prefix_and_underscores(s, base);
        int64_t parsed = 0;
        const auto res = std::from_chars(digits.data(), digits.data() + digits.size(), parsed, static_cast<int>(base));
        if (!digits.empty() && res.ec == std::errc() && res.ptr == digits.data() + digits.size())
          return Value::data(Json(parsed));
      }
      as_float = parse_py_float(s);
    } else if (is_int(j)) {
      return Value::data(Json(int_of(j, line)));
    } else if (j.is_number_float()) {
      as_float = j.get<double>();
    }
    if (!as_float || std::isnan(*as_float)) return fallback;
    if (std::isinf(*as_float)) fail_at(line, "cannot convert float infinity to integer");
    if (std::fabs(*as_float) >= 9.2e18) fail_at(line, "integer overflow");
    return Value::data(Json(static_cast<int64_t>(std::trunc(*as_float))));
  }
  if (name == "float") {
    const Bound a = bind(args, {"default"}, fn, line);
    const Value fallback = a[0] ? *a[0] : Value::data(Json(0.0));
    if (v.undef()) fail_undefined(v, line);
    if (!v.is_data()) return fallback;
    if (is_num(v.j())) return Value::data(Json(float_of(v.j())));
    if (v.j().is_string()) {
      if (const auto f = parse_py_float(v.j().get_ref<const std::string&>())) return Value::data(Json(*f));
    }
    return fallback;
  }
  if (name == "abs") {
    no_args();
    if (v.undef()) fail_undefined(v, line);
    if (!v.is_data() || !is_num(v.j())) fail_at(line, "bad operand type for abs(): '", type_name(v), "'");
    if (v.j().is_number_float()) return Value::data(Json(std::fabs(v.j().get<double>())));
    const int64_t x = int_of(v.j(), line);
    return Value::data(Json(x < 0 ? negate(x, line) : x));
  }
  if (name == "round") {
    const Bound a = bind(args, {"precision", "method"}, fn, line);
    const int64_t precision = a[0] ? int_arg(*a[0], "round precision", line) : 0;
    const std::string method = a[1] ? str_arg(*a[1], "round method", line) : "common";
    if (method != "common" && method != "ceil" && method != "floor")
      fail_at(line, "round method must be common, ceil or floor");
    if (v.undef()) fail_undefined(v, line);
    if (!v.is_data() || !is_num(v.j())) fail_at(line, "round() needs a number, not '", type_name(v), "'");
    if (method == "common" && is_int(v.j()) && precision >= 0) return Value::data(Json(int_of(v.j(), line)));
    const double scale = std::pow(10.0, static_cast<double>(precision));
    const double x = float_of(v.j()) * scale;
    const double r = method == "ceil" ? std::ceil(x) : method == "floor" ? std::floor(x) : std::nearbyint(x);
    return Value::data(Json(r / scale));
  }
  if (name == "tojson") {
    const Bound a = bind(args, {"ensure_ascii", "indent", "separators", "sort_keys"}, fn, line);
    JsonStyle style;
    style.ascii = a[0] && truthy(*a[0]);
    if (a[1] && !is_none(*a[1])) {
      if (is_str(*a[1])) {
        style.indent = a[1]->j().get<std::string>();
      } else {
        style.indent =
            std::string(static_cast<size_t>(std::clamp<int64_t>(int_arg(*a[1], "tojson indent", line), 0, 64)), ' ');
      }
      style.item_sep = std::string(",");  // assigning the literal trips a GCC 12 -Wrestrict false alarm
    }
    if (a[2] && !is_none(*a[2])) {
      const Value& sep = *a[2];
      if (!sep.is_data() || !sep.j().is_array() || sep.j().size() != 2 || !sep.j()[0].is_string() ||
          !sep.j()[1].is_string())
        fail_at(line, "tojson separators must be a pair of strings");
      style.item_sep = sep.j()[0].get<std::string>();
      style.key_sep = sep.j()[1].get<std::string>();
    }
    style.sort_keys = a[3] && truthy(*a[3]);
    if (!v.is_data()) fail_at(line, "Object of type ", type_name(v), " is not JSON serializable");
    std::string out;
    dump_json(v.j(), style, 0, out, line);
    return str_value(out);
  }
  if (name == "items") {
    no_args();
    if (v.undef()) return Value::data(Json::array());
    if (!v.is_data() || !v.j().is_object()) fail_at(line, "can only get item pairs from a mapping");
    return call_method(v, "items", {}, line);
  }
  if (name == "dictsort") {
    const Bound a = bind(args, {"case_sensitive", "by", "reverse"}, fn, line);
    const bool case_sensitive = a[0] && truthy(*a[0]);
    const std::string by = a[1] ? str_arg(*a[1], "dictsort by", line) : "key";
    if (by != "key" && by != "value") fail_at(line, "you can only sort by either \"key\" or \"value\"");
    if (v.undef()) fail_undefined(v, line);
    if (!v.is_data() || !v.j().is_object()) fail_at(line, "dictsort needs a mapping, not '", type_name(v), "'");
    const Value pairs = call_method(v, "items", {}, line);
    std::vector<Value> items = iterate(pairs, line);
    const Value position = Value::data(Json(by == "key" ? 0 : 1));
    std::vector<Value> out = sorted(items, case_sensitive, position, line);
    if (a[2] && truthy(*a[2])) {
      std::vector<Value> keys = sort_keys(*this, items, case_sensitive, position, line, &Renderer::attr_path);
      std::vector<size_t> order(items.size());
      for (size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::stable_sort(order.begin(), order.end(),
                       [&](size_t x, size_t y) { return py_cmp(keys[y], keys[x], "<", line) < 0; });
      out.clear();
      for (const size_t i : order) out.push_back(items[i]);
    }
    return list_value(out, line);
  }
  if (name == "reverse") {
    no_args();
    if (is_str(v)) {
      auto units = units_of(v.j().get_ref<const std::string&>());
      std::string out;
      for (auto it = units.rbegin(); it != units.rend(); ++it) out += *it;
      return str_value(out);
    }
    auto items = iterate(v, line);
    std::reverse(items.begin(), items.end());
    return list_value(items, line);
  }
  if (name == "sort") {
    const Bound a = bind(args, {"reverse", "case_sensitive", "attribute"}, fn, line);
    const auto items = iterate(v, line);
    const bool case_sensitive = a[1] && truthy(*a[1]);
    if (!(a[0] && truthy(*a[0]))) return list_value(sorted(items, case_sensitive, a[2], line), line);
    const auto keys = sort_keys(*this, items, case_sensitive, a[2], line, &Renderer::attr_path);
    std::vector<size_t> order(items.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t x, size_t y) { return py_cmp(keys[y], keys[x], "<", line) < 0; });
    std::vector<Value> out;
    for (const size_t i : order) out.push_back(items[i]);
    return list_value(out, line);
  }
  if (name == "unique" || name == "min" || name == "max") {
    const Bound a = bind(args, {"case_sensitive", "attribute"}, fn, line);
    const auto items = iterate(v, line);
    const auto keys = sort_keys(*this, items, a[0] && truthy(*a[0]), a[1], line, &Renderer::attr_path);
    if (name == "unique") {
      std::vector<Value> out;
      std::vector<const Value*> seen;
      for (size_t i = 0; i < items.size(); ++i) {
        if (std::any_of(seen.begin(), seen.end(), [&](const Value* k) { return py_eq(*k, keys[i], line); })) continue;
        seen.push_back(&keys[i]);
        out.push_back(items[i]);
      }
      return list_value(out, line);
    }
    if (items.empty()) return Value::undefined("No aggregated item, sequence was empty.");
    size_t best = 0;
    for (size_t i = 1; i < items.size(); ++i) {
      const int c = py_cmp(keys[i], keys[best], name == "min" ? "<" : ">", line);
      if (name == "min" ? c < 0 : c > 0) best = i;
    }
    return items[best];
  }
  if (name == "sum") {
    const Bound a = bind(args, {"attribute", "start"}, fn, line);
    Value total = a[1] ? *a[1] : Value::data(Json(0));
    for (const auto& item : iterate(v, line))
      total = arithmetic("+", total, a[0] && !is_none(*a[0]) ? attr_path(item, *a[0], line) : item, line);
    return total;
  }
  if (name == "map") {
    std::vector<Value> out;
    const auto items = iterate(v, line);
    if (args.pos.empty()) {
      std::optional<Value> attribute, fallback;
      for (const auto& [key, value] : args.kw) {
        if (key == "attribute")
          attribute = value;
        else if (key == "default")
          fallback = value;
        else
          fail_at(line, "map() got an unexpected keyword argument '", key, "'");
      }
      if (!attribute) fail_at(line, "map() requires a filter name or attribute=");
      for (const auto& item : items) {
        Value mapped = attr_path(item, *attribute, line);
        if (mapped.undef() && fallback && !is_none(*fallback)) mapped = *fallback;
        out.push_back(std::move(mapped));
      }
    } else {
      const std::string& filter_name = str_arg(args.pos[0], "map() filter name", line);
      if (!contains(kFilters, filter_name)) fail_at(line, "unknown filter '", filter_name, "'");
      Args rest;
      rest.pos.assign(args.pos.begin() + 1, args.pos.end());
      rest.kw = args.kw;
      for (const auto& item : items) out.push_back(filter(filter_name, item, rest, line));
    }
    return list_value(out, line);
  }
  if (name == "select" || name == "reject" || name == "selectattr" || name == "rejectattr") {
    const bool by_attr = name == "selectattr" || name == "rejectattr";
    const bool keep = name == "select" || name == "selectattr";
    return list_value(select(name, v, args, by_attr, keep, line), line);
  }
  if (name == "indent") {
    const Bound a = bind(args, {"width", "first", "blank"}, fn, line);
    std::string indentation = "    ";
    if (a[0]) {
      indentation =
          is_str(*a[0])
              ? a[0]->j().get<std::string>()
              : std::string(static_cast<size_t>(std::clamp<int64_t>(int_arg(*a[0], "indent width", line), 0, 1024)),
                            ' ');
    }
    const bool first = a[1] && truthy(*a[1]);
    const bool blank = a[2] && truthy(*a[2]);
    const auto lines = py_splitlines(to_str(v, line) + "\n");
    std::string out;
    for (size_t i = 0; i < lines.size(); ++i) {
      if (i > 0) out += '\n';
      if ((i > 0 || first) && (blank || !lines[i].empty())) out += indentation;
      out += lines[i];
      check_size(out.size(), line);
    }
    return str_value(out);
  }
  fail_at(line, "unknown filter '", name, "'");
}

bool Renderer::test(const std::string& name, const Value& v, const Args& args, int line) {
  const auto arg = [&]() -> const Value& {
    if (args.pos.empty()) fail_at(line, "test '", name, "' needs an argument");
    return args.pos[0];
  };
  const Json* j = v.is_data() ? &v.j() : nullptr;
  if (name == "defined") return !v.undef();
  if (name == "undefined") return v.undef();
  if (name == "none") return j && j->is_null();
  if (name == "boolean") return j && j->is_boolean();
  if (name == "true") return j && j->is_boolean() && j->get<bool>();
  if (name == "false") return j && j->is_boolean() && !j->get<bool>();
  if (name == "integer") return j && j->is_number_integer();
  if (name == "float") return j && j->is_number_float();
  if (name == "number") return j && is_num(*j);
  if (name == "string") return j && j->is_string();
  if (name == "mapping") return j && j->is_object();
  if (name == "iterable" || name == "sequence")
    return v.undef() || (j && (j->is_string() || j->is_array() || j->is_object()));
  if (name == "callable") return v.kind == Value::Kind::Macro || v.kind == Value::Kind::Builtin;
  if (name == "escaped") return false;
  if (name == "sameas") {
    const Value& other = arg();
    if (v.kind != other.kind) return false;
    if (!j) return py_eq(v, other, line);
    const Json& o = other.j();
    if (j->is_null() || j->is_boolean()) return j->type() == o.type() && *j == o;
    return j == &o;
  }
  if (name == "in") return contains_value(arg(), v, line);
  if (name == "eq" || name == "equalto") return py_eq(v, arg(), line);
  if (name == "ne") return !py_eq(v, arg(), line);
  if (name == "lt" || name == "lessthan") return py_cmp(v, arg(), "<", line) < 0;
  if (name == "le") return py_cmp(v, arg(), "<=", line) <= 0;
  if (name == "gt" || name == "greaterthan") return py_cmp(v, arg(), ">", line) > 0;
  if (name == "ge") return py_cmp(v, arg(), ">=", line) >= 0;
  if (name == "divisibleby") return py_eq(arithmetic("%", v, arg(), line), Value::data(Json(0)), line);
  if (name == "even" || name == "odd")
    return py_eq(arithmetic("%", v, Value::data(Json(2)), line), Value::data(Json(name == "odd" ? 1 : 0)), line);
  if (name == "lower" || name == "upper") return py_is_case(to_str(v, line), name == "lower");
  if (name == "filter") return is_str(v) && contains(kFilters, v.j().get_ref<const std::string&>());
  if (name == "test") return is_str(v) && contains(kTests, v.j().get_ref<const std::string&>());
  fail_at(line, "unknown test '", name, "'");
}

}  // namespace ernie::jinja
