// The value type's Python semantics; see value.h.
#include "tokenizer/jinja/value.h"

#include <algorithm>
#include <cmath>
#include <limits>

#include "tokenizer/jinja/text.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

Value* Namespace::find(const std::string& name) {
  for (auto& [key, value] : attrs)
    if (key == name) return &value;
  return nullptr;
}

std::string type_name(const Json& j) {
  if (j.is_null()) return "NoneType";
  if (j.is_boolean()) return "bool";
  if (j.is_number_float()) return "float";
  if (j.is_number()) return "int";
  if (j.is_string()) return "str";
  if (j.is_array()) return "list";
  if (j.is_object()) return "dict";
  if (j.is_discarded()) return "Undefined";
  return "bytes";
}

std::string type_name(const Value& v) {
  switch (v.kind) {
    case Value::Kind::Undefined: return "Undefined";
    case Value::Kind::Namespace: return "Namespace";
    case Value::Kind::Macro: return "Macro";
    case Value::Kind::Builtin: return "builtin_function_or_method";
    case Value::Kind::Data: break;
  }
  return type_name(v.j());
}

[[noreturn]] void fail_undefined(const Value& v, int line) {
  fail_at(line, v.text);
}

void require_depth(int depth, int line) {
  if (depth > kMaxDataDepth) fail_at(line, "value nested more than ", kMaxDataDepth, " levels deep");
}

bool is_int(const Json& j) {
  return j.is_number_integer() || j.is_boolean();
}  // bool is an int in Python
bool is_num(const Json& j) {
  return j.is_number() || j.is_boolean();
}

int64_t int_of(const Json& j, int line) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  if (j.is_number_unsigned()) {
    const auto u = j.get<uint64_t>();
    if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) fail_at(line, "integer ", u, " is too large");
    return static_cast<int64_t>(u);
  }
  return j.get<int64_t>();
}

__int128 wide_int_of(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1 : 0;
  if (j.is_number_unsigned()) return static_cast<__int128>(j.get<uint64_t>());
  return j.get<int64_t>();
}

double float_of(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? 1.0 : 0.0;
  return j.get<double>();
}

std::string int_text(const Json& j) {
  if (j.is_boolean()) return j.get<bool>() ? "1" : "0";
  if (j.is_number_unsigned()) return std::to_string(j.get<uint64_t>());
  return std::to_string(j.get<int64_t>());
}

bool is_none(const Value& v) {
  return v.is_data() && v.j().is_null();
}
bool is_str(const Value& v) {
  return v.is_data() && v.j().is_string();
}
Value str_value(std::string_view s) {
  return Value::data(Json(std::string(s)));
}

Json to_element(const Value& v, int line) {
  if (v.undef()) return Json(Json::value_t::discarded);
  if (!v.is_data()) fail_at(line, "a ", type_name(v), " cannot be stored in a list or dict");
  return v.j();
}

Value list_value(const std::vector<Value>& items, int line) {
  Json out = Json::array();
  for (const auto& item : items) out.push_back(to_element(item, line));
  return Value::data(std::move(out));
}

void py_str(const Json& j, std::string& out, int depth, int line) {
  if (j.is_string()) {
    out += j.get_ref<const std::string&>();
  } else if (j.is_null()) {
    out += "None";
  } else if (j.is_boolean()) {
    out += j.get<bool>() ? "True" : "False";
  } else if (j.is_number_float()) {
    out += py_float(j.get<double>());
  } else if (j.is_number()) {
    out += int_text(j);
  } else if (j.is_discarded()) {
    out += "Undefined";
  } else if (j.is_array()) {
    require_depth(depth, line);
    out += '[';
    bool first = true;
    for (const auto& item : j) {
      if (!first) out += ", ";
      first = false;
      py_repr(item, out, depth + 1, line);
    }
    out += ']';
  } else if (j.is_object()) {
    require_depth(depth, line);
    out += '{';
    bool first = true;
    for (const auto& [key, item] : j.items()) {
      if (!first) out += ", ";
      first = false;
      py_repr_string(key, out);
      out += ": ";
      py_repr(item, out, depth + 1, line);
    }
    out += '}';
  } else {
    out += "b''";
  }
}

void py_repr(const Json& j, std::string& out, int depth, int line) {
  if (j.is_string()) {
    py_repr_string(j.get_ref<const std::string&>(), out);
  } else {
    py_str(j, out, depth, line);
  }
}

void append_str(const Value& v, std::string& out, int line, int depth) {
  switch (v.kind) {
    case Value::Kind::Undefined: return;
    case Value::Kind::Data: py_str(v.j(), out, depth, line); return;
    case Value::Kind::Macro: out += "<Macro>"; return;
    case Value::Kind::Builtin: out += "<built-in function " + v.text + ">"; return;
    case Value::Kind::Namespace: {
      require_depth(depth, line);
      out += "<Namespace {";
      bool first = true;
      for (const auto& [key, item] : v.ns->attrs) {
        if (!first) out += ", ";
        first = false;
        py_repr_string(key, out);
        out += ": ";
        if (item.is_data() && item.j().is_string()) {
          py_repr_string(item.j().get_ref<const std::string&>(), out);
        } else {
          append_str(item, out, line, depth + 1);
        }
      }
      out += "}>";
      return;
    }
  }
}

std::string to_str(const Value& v, int line) {
  std::string out;
  append_str(v, out, line);
  return out;
}

bool truthy(const Value& v) {
  if (v.kind == Value::Kind::Undefined) return false;
  if (v.kind != Value::Kind::Data) return true;
  const Json& j = v.j();
  if (j.is_null() || j.is_discarded()) return false;
  if (j.is_boolean()) return j.get<bool>();
  if (j.is_number_float()) return j.get<double>() != 0.0;
  if (j.is_number()) return wide_int_of(j) != 0;
  if (j.is_string()) return !j.get_ref<const std::string&>().empty();
  return !j.empty();
}

namespace {

bool json_eq(const Json& a, const Json& b, int depth, int line) {
  if (is_num(a) && is_num(b)) {
    if (a.is_number_float() || b.is_number_float()) return float_of(a) == float_of(b);
    return wide_int_of(a) == wide_int_of(b);
  }
  if (a.is_discarded() || b.is_discarded()) return a.is_discarded() && b.is_discarded();
  if (a.type() != b.type()) return false;
  if (a.is_string()) return a.get_ref<const std::string&>() == b.get_ref<const std::string&>();
  if (a.is_null()) return true;
  require_depth(depth, line);
  if (a.is_array()) {
    if (a.size() != b.size()) return false;
    for (size_t i = 0; i < a.size(); ++i)
      if (!json_eq(a[i], b[i], depth + 1, line)) return false;
    return true;
  }
  if (a.is_object()) {
    if (a.size() != b.size()) return false;
    for (const auto& [key, item] : a.items()) {
      const auto it = b.find(key);
      if (it == b.end() || !json_eq(item, *it, depth + 1, line)) return false;
    }
    return true;
  }
  return a == b;
}

}  // namespace

bool py_eq(const Value& a, const Value& b, int line) {
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Value::Kind::Undefined: return true;
    case Value::Kind::Namespace: return a.ns == b.ns;
    case Value::Kind::Macro: return a.macro->def == b.macro->def;
    case Value::Kind::Builtin: return a.text == b.text;
    case Value::Kind::Data: return json_eq(a.j(), b.j(), 0, line);
  }
  return false;
}

namespace {

int json_cmp(const Json& a, const Json& b, const char* op, int depth, int line) {
  if (is_num(a) && is_num(b)) {
    if (a.is_number_float() || b.is_number_float()) {
      const double x = float_of(a), y = float_of(b);
      return x < y ? -1 : (x > y ? 1 : 0);
    }
    const __int128 x = wide_int_of(a), y = wide_int_of(b);
    return x < y ? -1 : (x > y ? 1 : 0);
  }
  if (a.is_string() && b.is_string()) {
    const int c = a.get_ref<const std::string&>().compare(b.get_ref<const std::string&>());
    return c < 0 ? -1 : (c > 0 ? 1 : 0);
  }
  if (a.is_array() && b.is_array()) {
    require_depth(depth, line);
    for (size_t i = 0; i < a.size() && i < b.size(); ++i)
      if (!json_eq(a[i], b[i], depth + 1, line)) return json_cmp(a[i], b[i], op, depth + 1, line);
    return a.size() < b.size() ? -1 : (a.size() > b.size() ? 1 : 0);
  }
  fail_at(line, "'", op, "' not supported between instances of '", type_name(a), "' and '", type_name(b), "'");
}

}  // namespace

int py_cmp(const Value& a, const Value& b, const char* op, int line) {
  if (a.undef()) fail_undefined(a, line);
  if (b.undef()) fail_undefined(b, line);
  if (!a.is_data() || !b.is_data())
    fail_at(line, "'", op, "' not supported between instances of '", type_name(a), "' and '", type_name(b), "'");
  return json_cmp(a.j(), b.j(), op, 0, line);
}

namespace {

void dump_string(std::string_view s, bool ascii, std::string& out) {
  static const char* hex = "0123456789abcdef";
  const auto u4 = [&](uint32_t v) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(v >> shift) & 15];
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    const char32_t c = d.code_point;
    if (c == '"') {
      out += "\\\"";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == 0x08) {
      out += "\\b";
    } else if (c == 0x0C) {
      out += "\\f";
    } else if (c < 0x20) {
      u4(c);
    } else if (ascii && c > 0x7E) {
      if (c >= 0x10000) {
        const uint32_t v = c - 0x10000;
        u4(0xD800 + (v >> 10));
        u4(0xDC00 + (v & 0x3FF));
      } else {
        u4(c);
      }
    } else {
      out.append(s.substr(i, d.length));
    }
    i += d.length;
  }
  out += '"';
}

}  // namespace

void dump_json(const Json& j, const JsonStyle& style, int level, std::string& out, int line) {
  if (j.is_discarded()) fail_at(line, "Object of type Undefined is not JSON serializable");
  if (j.is_null()) {
    out += "null";
  } else if (j.is_boolean()) {
    out += j.get<bool>() ? "true" : "false";
  } else if (j.is_number_float()) {
    const double v = j.get<double>();
    out += std::isnan(v) ? "NaN" : std::isinf(v) ? (v < 0 ? "-Infinity" : "Infinity") : py_float(v);
  } else if (j.is_number()) {
    out += int_text(j);
  } else if (j.is_string()) {
    dump_string(j.get_ref<const std::string&>(), style.ascii, out);
  } else if (j.is_array() || j.is_object()) {
    require_depth(level, line);
    const bool array = j.is_array();
    if (j.empty()) {
      out += array ? "[]" : "{}";
      return;
    }
    const auto newline = [&](int depth) {
      if (!style.indent) return;
      out += '\n';
      for (int k = 0; k < depth; ++k) out += *style.indent;
    };
    out += array ? '[' : '{';
    newline(level + 1);
    if (array) {
      bool first = true;
      for (const auto& item : j) {
        if (!first) out += style.item_sep, newline(level + 1);
        first = false;
        dump_json(item, style, level + 1, out, line);
      }
    } else {
      std::vector<std::pair<const std::string*, const Json*>> entries;
      for (const auto& [key, item] : j.items()) entries.emplace_back(&key, &item);
      if (style.sort_keys)
        std::stable_sort(entries.begin(), entries.end(),
                         [](const auto& a, const auto& b) { return *a.first < *b.first; });
      bool first = true;
      for (const auto& [key, item] : entries) {
        if (!first) out += style.item_sep, newline(level + 1);
        first = false;
        dump_string(*key, style.ascii, out);
        out += style.key_sep;
        dump_json(*item, style, level + 1, out, line);
      }
    }
    newline(level);
    out += array ? ']' : '}';
  } else {
    fail_at(line, "Object of type bytes is not JSON serializable");
  }
}

}  // namespace ernie::jinja
