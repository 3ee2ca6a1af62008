// Global functions (range, dict, namespace, raise_exception, strftime_now) and the str, dict and list methods
// templates call, as Renderer members; see builtins.h and render.h.
#include "tokenizer/jinja/builtins.h"

#include <algorithm>
#include <ctime>

#include "tokenizer/jinja/operators.h"
#include "tokenizer/jinja/render.h"
#include "tokenizer/jinja/text.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

bool contains(const std::vector<std::string_view>& list, std::string_view name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

Bound bind(const Args& args, std::initializer_list<const char*> names, const std::string& fn, int line) {
  Bound out(names.size());
  if (args.pos.size() > names.size())
    fail_at(line, fn, "() takes at most ", names.size(), " argument(s), ", args.pos.size(), " given");
  for (size_t i = 0; i < args.pos.size(); ++i) out[i] = args.pos[i];
  for (const auto& [key, value] : args.kw) {
    size_t index = 0;
    for (const char* name : names) {
      if (key == name) break;
      ++index;
    }
    if (index == names.size()) fail_at(line, fn, "() got an unexpected keyword argument '", key, "'");
    if (out[index]) fail_at(line, fn, "() got multiple values for argument '", key, "'");
    out[index] = value;
  }
  return out;
}

const Value& required(const Bound& bound, size_t index, const char* name, const std::string& fn, int line) {
  if (!bound[index]) fail_at(line, fn, "() missing required argument '", name, "'");
  return *bound[index];
}

const std::string& str_arg(const Value& v, const char* what, int line) {
  if (v.undef()) fail_undefined(v, line);
  if (!is_str(v)) fail_at(line, what, " must be a string, not '", type_name(v), "'");
  return v.j().get_ref<const std::string&>();
}

int64_t int_arg(const Value& v, const char* what, int line) {
  if (v.undef()) fail_undefined(v, line);
  if (!v.is_data() || !is_int(v.j())) fail_at(line, what, " must be an integer, not '", type_name(v), "'");
  return int_of(v.j(), line);
}

std::optional<std::string> opt_str(const std::optional<Value>& v, const char* what, int line) {
  if (!v || is_none(*v)) return std::nullopt;
  return str_arg(*v, what, line);
}

Value Renderer::call_builtin(const std::string& name, const Args& args, int line) {
  if (name == "raise_exception") {
    const Bound a = bind(args, {"message"}, name, line);
    fail_line("chat template: " + (a[0] ? to_str(*a[0], line) : std::string()) + " (raise_exception at line " +
              std::to_string(line) + ")");
  }
  if (name == "range") {
    if (!args.kw.empty()) fail_at(line, "range() takes no keyword arguments");
    if (args.pos.empty() || args.pos.size() > 3) fail_at(line, "range() takes 1 to 3 arguments");
    int64_t start = 0, stop = 0, step = 1;
    if (args.pos.size() == 1) {
      stop = int_arg(args.pos[0], "range() argument", line);
    } else {
      start = int_arg(args.pos[0], "range() argument", line);
      stop = int_arg(args.pos[1], "range() argument", line);
      if (args.pos.size() == 3) step = int_arg(args.pos[2], "range() argument", line);
    }
    if (step == 0) fail_at(line, "range() arg 3 must not be zero");
    const __int128 span = step > 0 ? static_cast<__int128>(stop) - start : static_cast<__int128>(start) - stop;
    const __int128 count = span <= 0 ? 0
                                     : (span + (step > 0 ? step : -static_cast<__int128>(step)) - 1) /
                                           (step > 0 ? step : -static_cast<__int128>(step));
    if (count > static_cast<__int128>(kMaxBuiltSize)) check_size(kMaxBuiltSize + 1, line);
    Json out = Json::array();
    for (__int128 i = 0; i < count; ++i) out.push_back(static_cast<int64_t>(start + i * step));
    return Value::data(std::move(out));
  }
  if (name == "namespace" || name == "dict") {
    if (args.pos.size() > 1) fail_at(line, name, "() takes at most 1 positional argument");
    std::vector<std::pair<std::string, Value>> entries;
    if (!args.pos.empty()) {
      const Value& init = args.pos[0];
      if (!init.is_data() || !init.j().is_object())
        fail_at(line, name, "() argument must be a dict, not '", type_name(init), "'");
      for (const auto& [key, item] : init.j().items()) entries.emplace_back(key, init.child(item));
    }
    for (const auto& kw : args.kw) entries.push_back(kw);
    if (name == "dict") {
      Json out = Json::object();
      for (const auto& [key, value] : entries) out[key] = to_element(value, line);
      return Value::data(std::move(out));
    }
    Value ns;
    ns.kind = Value::Kind::Namespace;
    ns.ns = std::make_shared<Namespace>();
    namespaces_.push_back(ns.ns);
    for (auto& [key, value] : entries) {
      if (Value* slot = ns.ns->find(key)) {
        *slot = value;
      } else {
        ns.ns->attrs.emplace_back(key, value);
      }
    }
    return ns;
  }
  if (name == "strftime_now") {
    const Bound a = bind(args, {"format"}, name, line);
    const std::string& format = str_arg(required(a, 0, "format", name, line), "strftime_now() format", line);
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    localtime_r(&now, &tm);
    std::string buf(256 + format.size() * 16, '\0');
    const size_t n = std::strftime(buf.data(), buf.size(), format.c_str(), &tm);
    buf.resize(n);
    return str_value(buf);
  }
  fail_at(line, "'", name, "' is not callable");
}

Value Renderer::call_method(const Value& obj, const std::string& name, const Args& args, int line) {
  const Json& j = obj.j();
  const std::string fn = type_name(j) + "." + name;
  if (j.is_string()) {
    const std::string& s = j.get_ref<const std::string&>();
    if (name == "strip" || name == "lstrip" || name == "rstrip") {
      const Bound a = bind(args, {"chars"}, fn, line);
      return str_value(py_strip(s, opt_str(a[0], "strip() chars", line), name != "rstrip", name != "lstrip"));
    }
    if (name == "upper" || name == "lower" || name == "title" || name == "capitalize") {
      bind(args, {}, fn, line);
      return str_value(name == "upper"   ? py_upper(s)
                       : name == "lower" ? py_lower(s)
                       : name == "title" ? py_title(s)
                                         : py_capitalize(s));
    }
    if (name == "startswith" || name == "endswith") {
      const Bound a = bind(args, {"prefix"}, fn, line);
      const Value& prefix = required(a, 0, "prefix", fn, line);
      std::vector<std::string> options;
      if (is_str(prefix)) {
        options.push_back(prefix.j().get<std::string>());
      } else if (prefix.is_data() && prefix.j().is_array()) {
        for (const auto& item : prefix.j()) {
          if (!item.is_string()) fail_at(line, name, "() tuple must contain only strings");
          options.push_back(item.get<std::string>());
        }
      } else {
        fail_at(line, name, "() argument must be str or a tuple of str, not '", type_name(prefix), "'");
      }
      for (const auto& option : options) {
        if (option.size() > s.size()) continue;
        if (name == "startswith" ? s.compare(0, option.size(), option) == 0
                                 : s.compare(s.size() - option.size(), option.size(), option) == 0)
          return Value::data(Json(true));
      }
      return Value::data(Json(false));
    }
    if (name == "split" || name == "rsplit") {
      const Bound a = bind(args, {"sep", "maxsplit"}, fn, line);
      const int64_t maxsplit = a[1] ? int_arg(*a[1], "maxsplit", line) : -1;
      Json out = Json::array();
      for (auto& part : py_split(s, opt_str(a[0], "split() separator", line), maxsplit, name == "rsplit", line))
        out.push_back(std::move(part));
      return Value::data(std::move(out));
    }
    if (name == "splitlines") {
      bind(args, {}, fn, line);
      Json out = Json::array();
      for (auto& part : py_splitlines(s)) out.push_back(std::move(part));
      return Value::data(std::move(out));
    }
    if (name == "replace") {
      const Bound a = bind(args, {"old", "new", "count"}, fn, line);
      const std::string& old = str_arg(required(a, 0, "old", fn, line), "replace() argument 1", line);
      const std::string& replacement = str_arg(required(a, 1, "new", fn, line), "replace() argument 2", line);
      return str_value(py_replace(s, old, replacement, a[2] ? int_arg(*a[2], "replace() count", line) : -1, line));
    }
    if (name == "find" || name == "rfind" || name == "index" || name == "rindex" || name == "count") {
      const Bound a = bind(args, {"sub"}, fn, line);
      const std::string& sub = str_arg(required(a, 0, "sub", fn, line), (name + "() argument").c_str(), line);
      if (name == "count") {
        if (sub.empty()) return Value::data(Json(count_units(s) + 1));
        int64_t n = 0;
        for (size_t k = s.find(sub); k != std::string::npos; k = s.find(sub, k + sub.size())) ++n;
        return Value::data(Json(n));
      }
      const size_t k = (name == "find" || name == "index") ? s.find(sub) : s.rfind(sub);
      if (k == std::string::npos) {
        if (name == "index" || name == "rindex") fail_at(line, "substring not found");
        return Value::data(Json(-1));
      }
      return Value::data(Json(count_units(std::string_view(s).substr(0, k))));
    }
    if (name == "join") {
      const Bound a = bind(args, {"iterable"}, fn, line);
      std::string out;
      bool first = true;
      for (const auto& item : iterate(required(a, 0, "iterable", fn, line), line)) {
        if (!is_str(item)) fail_at(line, "sequence item: expected str instance, ", type_name(item), " found");
        if (!first) out += s;
        first = false;
        out += item.j().get_ref<const std::string&>();
        check_size(out.size(), line);
      }
      return str_value(out);
    }
    if (name == "isdigit" || name == "isalpha" || name == "isalnum" || name == "isspace" || name == "islower" ||
        name == "isupper") {
      bind(args, {}, fn, line);
      bool result;
      if (name == "isdigit")
        result = all_units(s, is_digit_cp);
      else if (name == "isalpha")
        result = all_units(s, is_alpha_cp);
      else if (name == "isalnum")
        result = all_units(s, [](char32_t c) { return is_alpha_cp(c) || is_digit_cp(c); });
      else if (name == "isspace")
        result = all_units(s, is_space);
      else
        result = py_is_case(s, name == "islower");
      return Value::data(Json(result));
    }
  } else if (j.is_object()) {
    if (name == "items" || name == "keys" || name == "values") {
      bind(args, {}, fn, line);
      Json out = Json::array();
      for (const auto& [key, item] : j.items()) {
        if (name == "items")
          out.push_back(Json::array({key, item}));
        else if (name == "keys")
          out.push_back(key);
        else
          out.push_back(item);
      }
      return Value::data(std::move(out));
    }
    if (name == "get") {
      const Bound a = bind(args, {"key", "default"}, fn, line);
      const Value& key = required(a, 0, "key", fn, line);
      if (is_str(key)) {
        const auto it = j.find(key.j().get<std::string>());
        if (it != j.end()) return obj.child(*it);
      }
      return a[1] ? *a[1] : Value::data(Json(nullptr));
    }
  } else if (j.is_array()) {
    if (name == "index" || name == "count") {
      const Bound a = bind(args, {"value"}, fn, line);
      const Value& needle = required(a, 0, "value", fn, line);
      int64_t n = 0;
      for (size_t i = 0; i < j.size(); ++i) {
        if (!py_eq(obj.child(j[i]), needle, line)) continue;
        if (name == "index") return Value::data(Json(i));
        ++n;
      }
      if (name == "index") fail_at(line, "list.index(x): x not in list");
      return Value::data(Json(n));
    }
  }
  static const std::vector<std::string_view> mutating = {
      "append", "clear", "extend", "insert", "pop", "popitem", "remove", "reverse", "setdefault", "sort", "update"};
  if (contains(mutating, name) && (j.is_array() || j.is_object()))
    fail_at(line, "'", fn, "' would modify data, which the immutable sandbox forbids");
  if (j.is_object() && j.contains(name)) fail_at(line, "'", type_name(j.at(name)), "' object is not callable");
  fail_at(line, missing_attr(obj, name));
}

}  // namespace ernie::jinja
