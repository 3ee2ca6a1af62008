// Jinja2-subset interpreter behind ChatTemplate. Three stages: the lexer splits the source into text and tag
// chunks, applying jinja2's whitespace rules (trim_blocks, lstrip_blocks, -/+ markers) exactly as its lexer
// does; the parser builds an AST following jinja2's grammar and precedence; the renderer walks it with Python
// value semantics (truthiness, ==, str(), repr()) because that is what the templates were written against.
#include "tokenizer/chat_template.h"

#include <locale.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <ctime>
#include <cwctype>
#include <functional>
#include <limits>
#include <optional>
#include <sstream>
#include <unordered_map>
#include <utility>
#include <vector>

#include "core/error.h"

namespace ernie::jinja {

using Json = nlohmann::ordered_json;

// Templates come from model repositories and contexts from users: deep nesting must end in an ernie::Error,
// never in a stack overflow, and no single operation may allocate without bound.
constexpr int kMaxExprDepth = 96;
constexpr int kMaxBlockDepth = 96;
constexpr int kMaxMacroDepth = 48;
constexpr int kMaxDataDepth = 256;
constexpr size_t kMaxBuiltSize = size_t{1} << 26;

// Errors are one line (core/error.h) and may quote template or user text, so control characters are escaped and
// the message is bounded.
[[noreturn]] void fail_line(const std::string& message) {
  std::string out;
  for (const char c : message) {
    const auto u = static_cast<unsigned char>(c);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  constexpr size_t kMaxMessage = 1000;
  if (out.size() > kMaxMessage) {
    size_t cut = kMaxMessage;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut;  // keep UTF-8 whole
    out = out.substr(0, cut) + "...";
  }
  throw Error(out);
}

template <class... Parts>
[[noreturn]] void fail_at(int line, Parts&&... parts) {
  std::ostringstream message;
  (message << "chat template: " << ... << std::forward<Parts>(parts));
  message << " at line " << line;
  fail_line(message.str());
}

// ---------------------------------------------------------------------------------------------------------------
// UTF-8. Python strings are sequences of code points, so lengths, indices and slices count code points. Strings
// from the context may hold invalid UTF-8; such a byte counts as one unit so nothing reads out of bounds.

struct Unit {
  char32_t cp;
  size_t len;
  bool valid;
};

Unit decode(std::string_view s, size_t i) {
  const auto c = static_cast<unsigned char>(s[i]);
  if (c < 0x80) return {c, 1, true};
  size_t len;
  char32_t cp;
  if ((c & 0xE0) == 0xC0) {
    len = 2, cp = c & 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    len = 3, cp = c & 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    len = 4, cp = c & 0x07;
  } else {
    return {0xFFFD, 1, false};
  }
  if (i + len > s.size()) return {0xFFFD, 1, false};
  for (size_t k = 1; k < len; ++k) {
    const auto cc = static_cast<unsigned char>(s[i + k]);
    if ((cc & 0xC0) != 0x80) return {0xFFFD, 1, false};
    cp = (cp << 6) | (cc & 0x3F);
  }
  const bool overlong = (len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000);
  if (overlong || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return {0xFFFD, 1, false};
  return {cp, len, true};
}

void append_utf8(std::string& out, char32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xC0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xE0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cp & 0x3F));
  }
}

std::vector<std::string_view> units_of(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = decode(s, i).len;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

size_t count_units(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += decode(s, i).len) ++n;
  return n;
}

// str.isspace(), which is also what jinja2's \s and str.strip() use.
bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool unit_is_space(std::string_view u) {
  const Unit d = decode(u, 0);
  return d.valid && is_space(d.cp);
}

bool all_space(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    if (!d.valid || !is_space(d.cp)) return false;
    i += d.len;
  }
  return true;
}

// str.strip / lstrip / rstrip; without `chars` they strip Unicode whitespace.
std::string_view py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right) {
  const auto units = units_of(s);
  std::vector<std::string_view> set;
  if (chars) set = units_of(*chars);
  const auto drop = [&](std::string_view u) {
    return chars ? std::find(set.begin(), set.end(), u) != set.end() : unit_is_space(u);
  };
  size_t b = 0, e = units.size();
  if (left)
    while (b < e && drop(units[b])) ++b;
  if (right)
    while (e > b && drop(units[e - 1])) --e;
  if (b == e) return {};
  return std::string_view(units[b].data(),
                          static_cast<size_t>(units[e - 1].data() + units[e - 1].size() - units[b].data()));
}

// Case mapping per code point through glibc's C.UTF-8 tables (ASCII only if that locale is missing). Python's
// special multi-character mappings are not reproduced except ß -> SS.
locale_t utf8_locale() {
  static const locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

char32_t upper_cp(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') ? c - 32 : c;
  const locale_t loc = utf8_locale();
  return loc ? static_cast<char32_t>(towupper_l(static_cast<wint_t>(c), loc)) : c;
}

char32_t lower_cp(char32_t c) {
  if (c < 0x80) return (c >= 'A' && c <= 'Z') ? c + 32 : c;
  const locale_t loc = utf8_locale();
  return loc ? static_cast<char32_t>(towlower_l(static_cast<wint_t>(c), loc)) : c;
}

bool is_alpha_cp(char32_t c) {
  if (c < 0x80) return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
  const locale_t loc = utf8_locale();
  return loc && iswalpha_l(static_cast<wint_t>(c), loc);
}

bool is_digit_cp(char32_t c) { return c >= '0' && c <= '9'; }

bool is_cased(char32_t c) { return upper_cp(c) != c || lower_cp(c) != c; }

// Applies `map` to each unit; an invalid byte is copied through untouched.
template <class Map>
std::string map_units(std::string_view s, Map map) {
  std::string out;
  out.reserve(s.size());
  size_t index = 0;
  for (size_t i = 0; i < s.size(); ++index) {
    const Unit d = decode(s, i);
    if (d.valid) {
      map(d.cp, index, out);
    } else {
      out += s[i];
    }
    i += d.len;
  }
  return out;
}

std::string py_upper(std::string_view s) {
  return map_units(s, [](char32_t c, size_t, std::string& out) {
    if (c == 0xDF) {
      out += "SS";
    } else {
      append_utf8(out, upper_cp(c));
    }
  });
}

std::string py_lower(std::string_view s) {
  return map_units(s, [](char32_t c, size_t, std::string& out) { append_utf8(out, lower_cp(c)); });
}

std::string py_capitalize(std::string_view s) {
  return map_units(
      s, [](char32_t c, size_t i, std::string& out) { append_utf8(out, i == 0 ? upper_cp(c) : lower_cp(c)); });
}

// str.title(): a cased letter after an uncased character starts a word.
std::string py_title(std::string_view s) {
  bool prev_cased = false;
  return map_units(s, [&](char32_t c, size_t, std::string& out) {
    append_utf8(out, prev_cased ? lower_cp(c) : upper_cp(c));
    prev_cased = is_cased(c);
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Numbers, formatted as Python's str() / repr() do.

std::string py_float(double v) {
  if (std::isnan(v)) return "nan";
  if (std::isinf(v)) return v < 0 ? "-inf" : "inf";
  char buf[64];
  const auto res = std::to_chars(buf, buf + sizeof buf, v, std::chars_format::scientific);
  const std::string_view s(buf, static_cast<size_t>(res.ptr - buf));
  const bool negative = s[0] == '-';
  const size_t e = s.find('e');
  std::string digits;
  for (size_t k = negative ? 1 : 0; k < e; ++k)
    if (s[k] != '.') digits += s[k];
  int exp = 0;
  const char* exp_begin = s.data() + e + 1;
  if (*exp_begin == '+') ++exp_begin;
  std::from_chars(exp_begin, s.data() + s.size(), exp);
  std::string out = negative ? "-" : "";
  // repr() switches to exponent notation outside 1e-4 <= |v| < 1e16.
  if (exp >= -4 && exp < 16) {
    if (exp >= 0) {
      const auto whole = static_cast<size_t>(exp + 1);
      if (digits.size() <= whole) {
        out += digits + std::string(whole - digits.size(), '0') + ".0";
      } else {
        out += digits.substr(0, whole) + "." + digits.substr(whole);
      }
    } else {
      out += "0." + std::string(static_cast<size_t>(-exp - 1), '0') + digits;
    }
  } else {
    out += digits[0];
    if (digits.size() > 1) out += "." + digits.substr(1);
    out += exp < 0 ? "e-" : "e+";
    const int a = std::abs(exp);
    if (a < 10) out += '0';
    out += std::to_string(a);
  }
  return out;
}

bool is_int(const Json& j) { return j.is_number_integer() || j.is_boolean(); }  // bool is an int in Python
bool is_num(const Json& j) { return j.is_number() || j.is_boolean(); }

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

// ---------------------------------------------------------------------------------------------------------------
// Values: JSON data (shared, never copied on lookup) plus jinja's undefined, namespace objects, macros and the
// global functions. In lists and dicts an undefined element is stored as a "discarded" JSON value.

struct Value;
struct Scope;
struct MacroDef;

struct Namespace {
  std::vector<std::pair<std::string, Value>> attrs;
  Value* find(const std::string& name);
};

struct MacroRef {
  const MacroDef* def;
  // Weak, because the macro lives in the scope it closes over.
  std::weak_ptr<Scope> closure;
};

struct Value {
  enum class Kind { Undefined, Data, Namespace, Macro, Builtin };
  Kind kind = Kind::Undefined;
  std::shared_ptr<const Json> owner;
  const Json* json = nullptr;
  std::shared_ptr<Namespace> ns;
  std::shared_ptr<const MacroRef> macro;
  std::string text;  // Undefined: the message jinja2 would raise when it is used; Builtin: the function's name
  bool is_loop = false;

  static Value undefined(std::string why) {
    Value v;
    v.text = std::move(why);
    return v;
  }
  static Value data(Json j) {
    Value v;
    v.kind = Kind::Data;
    v.owner = std::make_shared<const Json>(std::move(j));
    v.json = v.owner.get();
    return v;
  }
  static Value shared(std::shared_ptr<const Json> owner) {
    Value v;
    v.kind = Kind::Data;
    v.json = owner.get();
    v.owner = std::move(owner);
    return v;
  }
  static Value builtin(std::string name) {
    Value v;
    v.kind = Kind::Builtin;
    v.text = std::move(name);
    return v;
  }
  // An element of this value's data, sharing its storage.
  Value child(const Json& j) const {
    if (j.is_discarded()) return undefined("undefined value");
    Value v;
    v.kind = Kind::Data;
    v.owner = owner;
    v.json = &j;
    return v;
  }
  bool undef() const { return kind == Kind::Undefined; }
  bool is_data() const { return kind == Kind::Data; }
  const Json& j() const { return *json; }
};

Value* Namespace::find(const std::string& name) {
  for (auto& [key, value] : attrs)
    if (key == name) return &value;
  return nullptr;
}

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
};

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

[[noreturn]] void fail_undefined(const Value& v, int line) { fail_at(line, v.text); }

void require_depth(int depth, int line) {
  if (depth > kMaxDataDepth) fail_at(line, "value nested more than ", kMaxDataDepth, " levels deep");
}

void py_repr(const Json& j, std::string& out, int depth, int line);

void py_repr_string(std::string_view s, std::string& out) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  for (const char c : s) {
    const auto u = static_cast<unsigned char>(c);
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (u < 0x20 || u == 0x7F) {
      static const char* hex = "0123456789abcdef";
      out += "\\x";
      out += hex[u >> 4];
      out += hex[u & 15];
    } else {
      out += c;
    }
  }
  out += quote;
}

// str(x) for data: strings as themselves, containers as Python's repr of them.
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

void append_str(const Value& v, std::string& out, int line, int depth = 0) {
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

// Python's ordering: numbers with numbers, strings by code point, lists lexicographically; anything else is the
// TypeError jinja2 would raise.
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

int py_cmp(const Value& a, const Value& b, const char* op, int line) {
  if (a.undef()) fail_undefined(a, line);
  if (b.undef()) fail_undefined(b, line);
  if (!a.is_data() || !b.is_data())
    fail_at(line, "'", op, "' not supported between instances of '", type_name(a), "' and '", type_name(b), "'");
  return json_cmp(a.j(), b.j(), op, 0, line);
}

// What a list or dict stores for `v`.
Json to_element(const Value& v, int line) {
  if (v.undef()) return Json(Json::value_t::discarded);
  if (!v.is_data()) fail_at(line, "a ", type_name(v), " cannot be stored in a list or dict");
  return v.j();
}

// ---------------------------------------------------------------------------------------------------------------
// Lexer: the source becomes a sequence of chunks — literal text (whitespace rules already applied), {{ }} and
// {% %} tags as token lists. Comments vanish; {% raw %} bodies become text.

enum class TokKind { Name, String, Int, Float, Op };

struct Token {
  TokKind kind;
  std::string text;  // name, operator, or the literal's source
  Json value;        // string / number literals
  int line;
};

enum class ChunkKind { Text, Print, Statement };

struct Chunk {
  ChunkKind kind;
  std::string text;
  std::vector<Token> tokens;
  int line;
};

class Lexer {
 public:
  explicit Lexer(std::string_view raw) {
    // jinja2 normalises \r\n and \r to \n and, without keep_trailing_newline, drops one final newline.
    src_.reserve(raw.size());
    for (size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '\r') {
        src_ += '\n';
        if (i + 1 < raw.size() && raw[i + 1] == '\n') ++i;
      } else {
        src_ += raw[i];
      }
    }
    if (!src_.empty() && src_.back() == '\n') src_.pop_back();
    for (size_t i = 0; i < src_.size(); ++i)
      if (src_[i] == '\n') newlines_.push_back(i);
    for (size_t i = 0; i < src_.size();) {
      const Unit d = decode(src_, i);
      if (!d.valid) fail_at(line_at(i), "invalid UTF-8");
      i += d.len;
    }
  }

  std::vector<Chunk> run() {
    const size_t n = src_.size();
    size_t pos = 0;
    bool line_starting = true;
    while (pos < n) {
      const size_t open = find_open(pos);
      if (open == std::string::npos) {
        add_text(src_.substr(pos), pos);
        break;
      }
      const char kind = src_[open + 1];
      size_t body = open + 2;
      char sign = 0;
      if (body < n && (src_[body] == '-' || src_[body] == '+')) sign = src_[body++];
      const size_t raw_end = kind == '%' ? match_raw_begin(body) : std::string::npos;
      add_text(strip_before(std::string_view(src_).substr(pos, open - pos), sign, kind != '{', line_starting), pos);
      if (raw_end != std::string::npos) {
        pos = lex_raw(open, raw_end, line_starting);
      } else if (kind == '#') {
        pos = lex_comment(open, body, line_starting);
      } else {
        pos = lex_tag(open, body, kind == '%', line_starting);
      }
    }
    return std::move(chunks_);
  }

 private:
  std::string src_;
  std::vector<size_t> newlines_;
  std::vector<Chunk> chunks_;

  int line_at(size_t pos) const {
    return 1 + static_cast<int>(std::lower_bound(newlines_.begin(), newlines_.end(), pos) - newlines_.begin());
  }

  bool starts(size_t pos, std::string_view s) const { return src_.compare(pos, s.size(), s) == 0; }

  size_t skip_space(size_t pos) const {
    while (pos < src_.size()) {
      const Unit d = decode(src_, pos);
      if (!is_space(d.cp)) break;
      pos += d.len;
    }
    return pos;
  }

  size_t find_open(size_t pos) const {
    for (size_t i = src_.find('{', pos); i != std::string::npos; i = src_.find('{', i + 1)) {
      if (i + 1 < src_.size() && (src_[i + 1] == '{' || src_[i + 1] == '%' || src_[i + 1] == '#')) return i;
    }
    return std::string::npos;
  }

  void add_text(std::string_view text, size_t pos) {
    if (!text.empty()) chunks_.push_back({ChunkKind::Text, std::string(text), {}, line_at(pos)});
  }

  // Whitespace before a tag: "-" strips all of it; otherwise lstrip_blocks removes the indentation of a block or
  // comment tag that starts its line ("+" opts out). `line_starting`: the previous tag's end consumed a newline.
  static std::string_view strip_before(std::string_view text, char sign, bool lstrip, bool line_starting) {
    if (sign == '-') return py_strip(text, std::nullopt, false, true);
    if (sign == '+' || !lstrip) return text;
    const size_t nl = text.rfind('\n');
    const size_t line_begin = nl == std::string_view::npos ? 0 : nl + 1;
    if ((line_begin > 0 || line_starting) && line_begin < text.size() && all_space(text.substr(line_begin)))
      return text.substr(0, line_begin);
    return text;
  }

  // {%[-+]? raw (-%}\s* | %}) — note trim_blocks does not apply to it, as in jinja2. Returns where the body starts.
  size_t match_raw_begin(size_t pos) const {
    pos = skip_space(pos);
    if (!starts(pos, "raw")) return std::string::npos;
    pos = skip_space(pos + 3);
    if (starts(pos, "-%}")) return skip_space(pos + 3);
    if (starts(pos, "%}")) return pos + 2;
    return std::string::npos;
  }

  // Consumes a tag end at `pos`: "+X}" keeps what follows, "-X}" eats following whitespace, a plain block or
  // comment end eats one newline (trim_blocks). Returns npos if there is no end here.
  size_t match_end(size_t pos, char kind, bool& line_starting) const {
    const std::string close = kind == '{' ? "}}" : std::string(1, kind) + "}";
    size_t end = std::string::npos;
    if (kind != '{' && starts(pos, "+" + close)) {
      end = pos + 3;
    } else if (starts(pos, "-" + close)) {
      end = skip_space(pos + 3);
    } else if (starts(pos, close)) {
      end = pos + 2;
      if (kind != '{' && end < src_.size() && src_[end] == '\n') ++end;
    }
    if (end != std::string::npos) line_starting = src_[end - 1] == '\n';
    return end;
  }

  size_t lex_comment(size_t open, size_t pos, bool& line_starting) {
    for (; pos < src_.size(); ++pos) {
      const size_t end = match_end(pos, '#', line_starting);
      if (end != std::string::npos) return end;
    }
    fail_at(line_at(open), "unclosed comment '{#' (no '#}')");
  }

  size_t lex_raw(size_t open, size_t body, bool& line_starting) {
    // The raw-begin match itself decides line_starting for the body's lstrip.
    line_starting = src_[body - 1] == '\n';
    for (size_t i = src_.find("{%", body); i != std::string::npos; i = src_.find("{%", i + 1)) {
      size_t k = i + 2;
      char sign = 0;
      if (k < src_.size() && (src_[k] == '-' || src_[k] == '+')) sign = src_[k++];
      k = skip_space(k);
      if (!starts(k, "endraw")) continue;
      bool ends_line = false;
      const size_t end = match_end(skip_space(k + 6), '%', ends_line);
      if (end == std::string::npos) continue;
      add_text(strip_before(std::string_view(src_).substr(body, i - body), sign, true, line_starting), body);
      line_starting = ends_line;
      return end;
    }
    fail_at(line_at(open), "unclosed '{% raw %}' (no '{% endraw %}')");
  }

  size_t digits_end(size_t pos) const {  // (\d+_)*\d+
    if (pos >= src_.size() || !std::isdigit(static_cast<unsigned char>(src_[pos]))) return std::string::npos;
    while (true) {
      while (pos < src_.size() && std::isdigit(static_cast<unsigned char>(src_[pos]))) ++pos;
      if (pos + 1 < src_.size() && src_[pos] == '_' && std::isdigit(static_cast<unsigned char>(src_[pos + 1]))) {
        ++pos;
        continue;
      }
      return pos;
    }
  }

  static std::string without_underscores(std::string_view s) {
    std::string out;
    for (const char c : s)
      if (c != '_') out += c;
    return out;
  }

  // Number literals as jinja2 lexes them: floats need a fraction or an exponent; ints may be 0b/0o/0x.
  size_t lex_number(size_t i, int line, std::vector<Token>& tokens) const {
    const size_t whole = digits_end(i);
    if (i == 0 || src_[i - 1] != '.') {
      size_t end = whole;
      bool is_float = false;
      if (end < src_.size() && src_[end] == '.') {
        const size_t frac = digits_end(end + 1);
        if (frac != std::string::npos) end = frac, is_float = true;
      }
      if (end < src_.size() && (src_[end] == 'e' || src_[end] == 'E')) {
        size_t k = end + 1;
        if (k < src_.size() && (src_[k] == '+' || src_[k] == '-')) ++k;
        const size_t exp = digits_end(k);
        if (exp != std::string::npos) end = exp, is_float = true;
      }
      if (is_float) {
        const std::string text = without_underscores(std::string_view(src_).substr(i, end - i));
        double v = 0;
        std::from_chars(text.data(), text.data() + text.size(), v);
        tokens.push_back({TokKind::Float, text, Json(v), line});
        return end;
      }
    }
    int base = 10;
    size_t begin = i, end = whole;
    if (src_[i] == '0' && i + 1 < src_.size()) {
      const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(src_[i + 1])));
      base = p == 'b' ? 2 : p == 'o' ? 8 : p == 'x' ? 16 : 10;
      if (base != 10) {
        const auto ok = [&](char c) {
          const int v = std::isdigit(static_cast<unsigned char>(c)) ? c - '0'
                        : std::isxdigit(static_cast<unsigned char>(c))
                            ? std::tolower(static_cast<unsigned char>(c)) - 'a' + 10
                            : 99;
          return v < base;
        };
        size_t k = i + 2;
        while (k < src_.size() && (ok(src_[k]) || (src_[k] == '_' && k + 1 < src_.size() && ok(src_[k + 1])))) ++k;
        if (k == i + 2) {
          base = 10;
        } else {
          begin = i + 2, end = k;
        }
      }
      if (base == 10) {  // a decimal literal starting with 0 is only zeros: 0(_?0)*
        end = i + 1;
        while (end < src_.size() &&
               (src_[end] == '0' || (src_[end] == '_' && end + 1 < src_.size() && src_[end + 1] == '0')))
          ++end;
      }
    }
    const std::string digits = without_underscores(std::string_view(src_).substr(begin, end - begin));
    int64_t v = 0;
    const auto res = std::from_chars(digits.data(), digits.data() + digits.size(), v, base);
    if (res.ec != std::errc()) fail_at(line, "integer literal ", src_.substr(i, end - i), " is too large");
    tokens.push_back({TokKind::Int, src_.substr(i, end - i), Json(v), line});
    return end;
  }

  // A string literal's escapes decode as Python's unicode-escape codec does; unknown escapes keep the backslash.
  static std::string unescape(std::string_view s, int line) {
    std::string out;
    const auto hex = [&](size_t at, size_t count) {
      if (at + count > s.size()) fail_at(line, "truncated escape in string literal");
      uint32_t v = 0;
      for (size_t k = at; k < at + count; ++k) {
        const char c = s[k];
        if (!std::isxdigit(static_cast<unsigned char>(c))) fail_at(line, "truncated escape in string literal");
        v = v * 16 + static_cast<uint32_t>(std::isdigit(static_cast<unsigned char>(c))
                                               ? c - '0'
                                               : std::tolower(static_cast<unsigned char>(c)) - 'a' + 10);
      }
      if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) fail_at(line, "invalid code point in string literal escape");
      return static_cast<char32_t>(v);
    };
    for (size_t i = 0; i < s.size(); ++i) {
      if (s[i] != '\\' || i + 1 == s.size()) {
        out += s[i];
        continue;
      }
      const char e = s[++i];
      switch (e) {
        case '\n': break;
        case '\\': out += '\\'; break;
        case '\'': out += '\''; break;
        case '"': out += '"'; break;
        case 'a': out += '\a'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'n': out += '\n'; break;
        case 'r': out += '\r'; break;
        case 't': out += '\t'; break;
        case 'v': out += '\v'; break;
        case 'x':
          append_utf8(out, hex(i + 1, 2));
          i += 2;
          break;
        case 'u':
          append_utf8(out, hex(i + 1, 4));
          i += 4;
          break;
        case 'U':
          append_utf8(out, hex(i + 1, 8));
          i += 8;
          break;
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = 0;
            size_t k = i;
            for (; k < s.size() && k < i + 3 && s[k] >= '0' && s[k] <= '7'; ++k)
              v = v * 8 + static_cast<char32_t>(s[k] - '0');
            append_utf8(out, v);
            i = k - 1;
          } else {
            out += '\\';
            out += e;
          }
      }
    }
    return out;
  }

  size_t lex_tag(size_t open, size_t pos, bool block, bool& line_starting) {
    const char kind = block ? '%' : '{';
    const int open_line = line_at(open);
    std::vector<Token> tokens;
    std::vector<char> balance;
    static const char* const two_char_ops[] = {"//", "**", "==", "!=", ">=", "<="};
    static const std::string_view one_char_ops = "+-/*%~[](){}><=.:|,;";
    while (true) {
      if (pos >= src_.size())
        fail_at(open_line, "unclosed '", block ? "{%" : "{{", "' (no '", block ? "%}" : "}}",
                "' before the end of the template)");
      if (balance.empty()) {
        const size_t end = match_end(pos, kind, line_starting);
        if (end != std::string::npos) {
          chunks_.push_back({block ? ChunkKind::Statement : ChunkKind::Print, {}, std::move(tokens), open_line});
          return end;
        }
      }
      const int line = line_at(pos);
      const Unit d = decode(src_, pos);
      const char c = src_[pos];
      if (is_space(d.cp)) {
        pos += d.len;
      } else if (std::isdigit(static_cast<unsigned char>(c))) {
        pos = lex_number(pos, line, tokens);
      } else if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t end = pos;
        while (end < src_.size() && (std::isalnum(static_cast<unsigned char>(src_[end])) || src_[end] == '_')) ++end;
        tokens.push_back({TokKind::Name, src_.substr(pos, end - pos), {}, line});
        pos = end;
      } else if (c == '\'' || c == '"') {
        size_t k = pos + 1;
        while (k < src_.size() && src_[k] != c) k += src_[k] == '\\' ? 2 : 1;
        if (k >= src_.size()) fail_at(line, "unterminated string literal");
        tokens.push_back({TokKind::String, src_.substr(pos, k + 1 - pos),
                          Json(unescape(std::string_view(src_).substr(pos + 1, k - pos - 1), line)), line});
        pos = k + 1;
      } else {
        std::string op;
        for (const char* two : two_char_ops)
          if (starts(pos, two)) op = two;
        if (op.empty() && one_char_ops.find(c) != std::string_view::npos) op = std::string(1, c);
        if (op.empty()) fail_at(line, "unexpected character '", src_.substr(pos, d.len), "'");
        if (op == "(" || op == "[" || op == "{") {
          balance.push_back(op == "(" ? ')' : op == "[" ? ']' : '}');
        } else if (op == ")" || op == "]" || op == "}") {
          if (balance.empty()) fail_at(line, "unexpected '", op, "'");
          if (balance.back() != op[0]) fail_at(line, "unexpected '", op, "', expected '", balance.back(), "'");
          balance.pop_back();
        }
        tokens.push_back({TokKind::Op, op, {}, line});
        pos += op.size();
      }
    }
  }
};

// ---------------------------------------------------------------------------------------------------------------
// AST.

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

const std::vector<std::string_view> kFilters = {
    "abs",     "capitalize", "count",       "d",      "default", "dictsort",   "e",      "escape",
    "first",   "float",      "forceescape", "indent", "int",     "items",      "join",   "last",
    "length",  "list",       "lower",       "map",    "max",     "min",        "reject", "rejectattr",
    "replace", "reverse",    "round",       "safe",   "select",  "selectattr", "sort",   "string",
    "sum",     "title",      "tojson",      "trim",   "unique",  "upper"};
const std::vector<std::string_view> kUnsupportedFilters = {
    "attr",  "batch",     "center",   "filesizeformat", "format", "groupby",   "pprint",   "random",
    "slice", "striptags", "truncate", "urlencode",      "urlize", "wordcount", "wordwrap", "xmlattr"};
const std::vector<std::string_view> kTests = {
    "boolean",  "callable", "defined", "divisibleby", "eq",        "equalto", "escaped", "even",     "false",
    "filter",   "float",    "ge",      "greaterthan", "gt",        "in",      "integer", "iterable", "le",
    "lessthan", "lower",    "lt",      "mapping",     "ne",        "none",    "number",  "odd",      "sameas",
    "sequence", "string",   "test",    "true",        "undefined", "upper"};
const std::vector<std::string_view> kBuiltins = {"dict", "namespace", "raise_exception", "range", "strftime_now"};
const std::vector<std::string_view> kUnsupportedTags = {
    "autoescape", "block", "do", "extends", "from", "import", "include", "pluralize", "print", "recursive", "trans"};

bool contains(const std::vector<std::string_view>& list, std::string_view name) {
  return std::find(list.begin(), list.end(), name) != list.end();
}

class Parser {
 public:
  explicit Parser(std::vector<Chunk> chunks) : chunks_(std::move(chunks)) {}

  Body parse_template() {
    Body body;
    parse_body(body, {}, "", 0);
    return body;
  }

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
  [[noreturn]] void unexpected() const {
    if (at_end()) fail_at(tag_line_, "unexpected end of tag");
    fail_at(line(), "unexpected '", (*toks_)[ti_].text, "'");
  }
  void expect_op(std::string_view op) {
    if (!is_op(op)) {
      if (at_end()) fail_at(tag_line_, "expected '", op, "' before the end of the tag");
      fail_at(line(), "expected '", op, "', got '", (*toks_)[ti_].text, "'");
    }
    ++ti_;
  }
  std::string expect_name() {
    const Token* t = peek();
    if (!t || t->kind != TokKind::Name) {
      if (!t) fail_at(tag_line_, "expected a name before the end of the tag");
      fail_at(t->line, "expected a name, got '", t->text, "'");
    }
    ++ti_;
    return t->text;
  }
  void expect_end() {
    if (!at_end()) unexpected();
  }

  ExprPtr make(EK kind, int line) {
    auto e = std::make_unique<Expr>();
    e->kind = kind;
    e->line = line;
    return e;
  }

  // ---- statements

  // Parses nodes into `body` until a tag whose keyword is in `ends`; returns that keyword with the token cursor
  // after it. Running out of template is an error unless `ends` is empty (the top level).
  std::string parse_body(Body& body, std::initializer_list<std::string_view> ends, std::string_view opener,
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

  void parse_statement(const std::string& keyword, Body& body, int tag_line) {
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

  void parse_params(MacroDef& def) {
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

  // A macro body is its own function: break/continue cannot reach a loop around the definition.
  void parse_macro_body(MacroDef& def, std::string_view opener, int tag_line) {
    const int saved = loop_depth_;
    loop_depth_ = 0;
    const std::string_view end = opener == "macro" ? "endmacro" : "endcall";
    parse_body(def.body, {end}, opener, tag_line);
    loop_depth_ = saved;
    expect_end();
  }

  // Assignment targets: a name or names separated by commas, optionally in parentheses.
  Target parse_target(bool for_loop) {
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

  // ---- expressions, following jinja2's parser function by function

  bool tuple_end() const { return at_end() || is_op(")"); }

  ExprPtr parse_tuple(bool with_condexpr, bool explicit_parens) {
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

  ExprPtr parse_expression(bool with_condexpr) { return with_condexpr ? parse_condexpr() : parse_or(); }

  ExprPtr parse_condexpr() {
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

  ExprPtr binary(EK kind, std::string op, ExprPtr left, ExprPtr right, int at) {
    auto e = make(kind, at);
    e->name = std::move(op);
    e->kids.push_back(std::move(left));
    e->kids.push_back(std::move(right));
    return e;
  }

  ExprPtr parse_or() {
    ExprPtr left = parse_and();
    while (is_name("or")) {
      const int at = line();
      ++ti_;
      left = binary(EK::Or, "or", std::move(left), parse_and(), at);
    }
    return left;
  }

  ExprPtr parse_and() {
    ExprPtr left = parse_not();
    while (is_name("and")) {
      const int at = line();
      ++ti_;
      left = binary(EK::And, "and", std::move(left), parse_not(), at);
    }
    return left;
  }

  ExprPtr parse_not() {
    if (is_name("not")) {
      DepthGuard guard(expr_depth_, kMaxExprDepth, line(), "expressions");
      auto e = make(EK::Not, line());
      ++ti_;
      e->kids.push_back(parse_not());
      return e;
    }
    return parse_compare();
  }

  ExprPtr parse_compare() {
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

  ExprPtr parse_math1() {
    ExprPtr left = parse_concat();
    while (is_op("+") || is_op("-")) {
      const int at = line();
      std::string op = peek()->text;
      ++ti_;
      left = binary(EK::Binary, std::move(op), std::move(left), parse_concat(), at);
    }
    return left;
  }

  ExprPtr parse_concat() {
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

  ExprPtr parse_math2() {
    ExprPtr left = parse_pow();
    while (is_op("*") || is_op("/") || is_op("//") || is_op("%")) {
      const int at = line();
      std::string op = peek()->text;
      ++ti_;
      left = binary(EK::Binary, std::move(op), std::move(left), parse_pow(), at);
    }
    return left;
  }

  ExprPtr parse_pow() {
    ExprPtr left = parse_unary(true);
    while (is_op("**")) {
      const int at = line();
      ++ti_;
      left = binary(EK::Binary, "**", std::move(left), parse_unary(true), at);
    }
    return left;
  }

  // As in jinja2, unary minus binds tighter than filters: `-x|abs` is abs(-x).
  ExprPtr parse_unary(bool with_filter) {
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

  ExprPtr constant(Json value, int at) {
    auto e = make(EK::Const, at);
    e->constant = std::make_shared<const Json>(std::move(value));
    return e;
  }

  ExprPtr parse_primary() {
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

  ExprPtr parse_postfix(ExprPtr node) {
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

  ExprPtr parse_filter_expr(ExprPtr node) {
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

  ExprPtr parse_subscript(ExprPtr node) {
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

  void parse_call_args(Expr& call) {
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

  ExprPtr parse_call(ExprPtr callee) {
    auto e = make(EK::Call, line());
    e->kids.push_back(std::move(callee));
    parse_call_args(*e);
    return e;
  }

  // One filter application at the cursor: name [(args)]. `subject` is null for block filters.
  ExprPtr parse_one_filter(ExprPtr subject) {
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

  ExprPtr parse_filter(ExprPtr node) {
    while (is_op("|")) {
      ++ti_;
      node = parse_one_filter(std::move(node));
    }
    return node;
  }

  // `upper | replace('a', 'b')` after {% filter %} or {% set x | %}.
  std::vector<ExprPtr> parse_filter_chain() {
    std::vector<ExprPtr> chain;
    chain.push_back(parse_one_filter(nullptr));
    while (is_op("|")) {
      ++ti_;
      chain.push_back(parse_one_filter(nullptr));
    }
    return chain;
  }

  ExprPtr parse_test(ExprPtr node) {
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
};

// ---------------------------------------------------------------------------------------------------------------
// Renderer helpers: lookups, iteration, operators and Python's str methods.

struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

using Bound = std::vector<std::optional<Value>>;

// Maps call arguments onto parameters that may be given positionally or by keyword, as Python does.
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

bool is_none(const Value& v) { return v.is_data() && v.j().is_null(); }
bool is_str(const Value& v) { return v.is_data() && v.j().is_string(); }

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

Value str_value(std::string_view s) { return Value::data(Json(std::string(s))); }

Value lookup(const std::shared_ptr<Scope>& scope, const std::string& name) {
  for (const Scope* s = scope.get(); s; s = s->parent.get()) {
    const auto it = s->vars.find(name);
    if (it != s->vars.end()) return it->second;
  }
  if (contains(kBuiltins, name)) return Value::builtin(name);
  return Value::undefined("'" + name + "' is undefined");
}

std::string missing_attr(const Value& obj, const std::string& name) {
  return "'" + type_name(obj) + " object' has no attribute '" + name + "'";
}

// obj.name: a dict's key, a namespace's attribute; anything else is undefined (jinja2 falls back to item lookup
// and returns Undefined on a miss). Only an undefined object raises.
Value get_attr(const Value& obj, const std::string& name, int line) {
  if (obj.undef()) fail_undefined(obj, line);
  if (obj.kind == Value::Kind::Namespace) {
    if (const Value* v = obj.ns->find(name)) return *v;
  } else if (obj.is_data() && obj.j().is_object()) {
    const auto it = obj.j().find(name);
    if (it != obj.j().end()) return obj.child(*it);
  }
  return Value::undefined(missing_attr(obj, name));
}

Value get_item(const Value& obj, const Value& key, int line) {
  if (obj.undef()) fail_undefined(obj, line);
  if (is_str(key)) {
    const std::string& name = key.j().get_ref<const std::string&>();
    if (obj.kind == Value::Kind::Namespace || (obj.is_data() && obj.j().is_object())) return get_attr(obj, name, line);
    return Value::undefined(missing_attr(obj, name));
  }
  if (obj.is_data() && key.is_data() && is_int(key.j()) && (obj.j().is_array() || obj.j().is_string())) {
    const __int128 raw = wide_int_of(key.j());
    if (obj.j().is_array()) {
      const auto n = static_cast<__int128>(obj.j().size());
      const __int128 index = raw < 0 ? raw + n : raw;
      if (index >= 0 && index < n) return obj.child(obj.j()[static_cast<size_t>(index)]);
    } else {
      const auto units = units_of(obj.j().get_ref<const std::string&>());
      const auto n = static_cast<__int128>(units.size());
      const __int128 index = raw < 0 ? raw + n : raw;
      if (index >= 0 && index < n) return str_value(units[static_cast<size_t>(index)]);
    }
  }
  std::string shown;
  if (key.is_data()) py_repr(key.j(), shown, 0, line);
  return Value::undefined("'" + type_name(obj) + " object' has no element " + shown);
}

// CPython's slice.indices().
std::vector<size_t> slice_indices(size_t size, std::optional<int64_t> start, std::optional<int64_t> stop,
                                  std::optional<int64_t> step, int line) {
  const int64_t n = static_cast<int64_t>(size);
  const int64_t st = step.value_or(1);
  if (st == 0) fail_at(line, "slice step cannot be zero");
  const int64_t lower = st > 0 ? 0 : -1, upper = st > 0 ? n : n - 1;
  const auto adjust = [&](std::optional<int64_t> v, int64_t fallback) {
    if (!v) return fallback;
    int64_t x = *v;
    if (x < 0) {
      x = x < -n ? lower : x + n;
      return std::max(x, lower);
    }
    return std::min(x, upper);
  };
  const int64_t b = adjust(start, st > 0 ? lower : upper), e = adjust(stop, st > 0 ? upper : lower);
  std::vector<size_t> out;
  for (int64_t i = b; st > 0 ? i < e : i > e; i += st) out.push_back(static_cast<size_t>(i));
  return out;
}

std::vector<Value> iterate(const Value& v, int line) {
  std::vector<Value> out;
  if (v.undef()) return out;
  if (!v.is_data()) fail_at(line, "'", type_name(v), "' object is not iterable");
  const Json& j = v.j();
  if (j.is_array()) {
    out.reserve(j.size());
    for (const auto& item : j) out.push_back(v.child(item));
  } else if (j.is_object()) {
    out.reserve(j.size());
    for (const auto& [key, item] : j.items()) out.push_back(str_value(key));
  } else if (j.is_string()) {
    for (const auto unit : units_of(j.get_ref<const std::string&>())) out.push_back(str_value(unit));
  } else {
    fail_at(line, "'", type_name(j), "' object is not iterable");
  }
  return out;
}

Value list_value(const std::vector<Value>& items, int line) {
  Json out = Json::array();
  for (const auto& item : items) out.push_back(to_element(item, line));
  return Value::data(std::move(out));
}

void check_size(size_t n, int line) {
  if (n > kMaxBuiltSize) fail_at(line, "result of ", n, " elements or bytes is too large");
}

int64_t negate(int64_t v, int line) {
  if (v == std::numeric_limits<int64_t>::min()) fail_at(line, "integer overflow");
  return -v;
}

// Python int arithmetic within 64 bits; overflow is an error rather than a bignum.
template <class Op>
int64_t checked_op(Op op, int64_t a, int64_t b, int line) {
  int64_t r = 0;
  if (op(a, b, &r)) fail_at(line, "integer overflow");
  return r;
}
constexpr auto add_ovf = [](int64_t a, int64_t b, int64_t* r) { return __builtin_add_overflow(a, b, r); };
constexpr auto sub_ovf = [](int64_t a, int64_t b, int64_t* r) { return __builtin_sub_overflow(a, b, r); };
constexpr auto mul_ovf = [](int64_t a, int64_t b, int64_t* r) { return __builtin_mul_overflow(a, b, r); };

Value arithmetic(const std::string& op, const Value& a, const Value& b, int line) {
  if (a.undef()) fail_undefined(a, line);
  if (b.undef()) fail_undefined(b, line);
  const auto type_error = [&]() {
    fail_at(line, "unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b), "'");
  };
  if (!a.is_data() || !b.is_data()) type_error();
  const Json& x = a.j();
  const Json& y = b.j();
  if (is_num(x) && is_num(y)) {
    if (op == "/") {
      if (float_of(y) == 0.0) fail_at(line, "division by zero");
      return Value::data(Json(float_of(x) / float_of(y)));
    }
    if (is_int(x) && is_int(y)) {
      const int64_t p = int_of(x, line), q = int_of(y, line);
      if (op == "+") return Value::data(Json(checked_op(add_ovf, p, q, line)));
      if (op == "-") return Value::data(Json(checked_op(sub_ovf, p, q, line)));
      if (op == "*") return Value::data(Json(checked_op(mul_ovf, p, q, line)));
      if (op == "//" || op == "%") {
        if (q == 0) fail_at(line, "integer division or modulo by zero");
        if (q == -1) return Value::data(Json(op == "%" ? int64_t{0} : negate(p, line)));
        int64_t quot = p / q, rem = p % q;
        if (rem != 0 && ((rem < 0) != (q < 0))) --quot, rem += q;  // Python floors
        return Value::data(Json(op == "%" ? rem : quot));
      }
      if (op == "**") {
        if (q < 0) return Value::data(Json(std::pow(static_cast<double>(p), static_cast<double>(q))));
        int64_t result = 1, base = p;
        for (int64_t e = q; e > 0; e >>= 1) {
          if (e & 1) result = checked_op(mul_ovf, result, base, line);
          if (e > 1) base = checked_op(mul_ovf, base, base, line);
        }
        return Value::data(Json(result));
      }
    }
    const double p = float_of(x), q = float_of(y);
    if (op == "+") return Value::data(Json(p + q));
    if (op == "-") return Value::data(Json(p - q));
    if (op == "*") return Value::data(Json(p * q));
    if (op == "//" || op == "%") {
      if (q == 0.0) fail_at(line, "float division or modulo by zero");
      // CPython's float divmod.
      double mod = std::fmod(p, q);
      double div = (p - mod) / q;
      if (mod != 0.0 && ((q < 0) != (mod < 0))) mod += q, div -= 1.0;
      if (mod == 0.0) mod = std::copysign(0.0, q);
      if (op == "%") return Value::data(Json(mod));
      double floordiv = std::copysign(0.0, p / q);
      if (div != 0.0) {
        floordiv = std::floor(div);
        if (div - floordiv > 0.5) floordiv += 1.0;
      }
      return Value::data(Json(floordiv));
    }
    if (op == "**") {
      if (p == 0.0 && q < 0) fail_at(line, "0.0 cannot be raised to a negative power");
      if (p < 0 && q != std::floor(q)) fail_at(line, "negative number raised to a fractional power");
      return Value::data(Json(std::pow(p, q)));
    }
  }
  if (op == "+") {
    if (x.is_string() && y.is_string()) {
      check_size(x.get_ref<const std::string&>().size() + y.get_ref<const std::string&>().size(), line);
      return str_value(x.get_ref<const std::string&>() + y.get_ref<const std::string&>());
    }
    if (x.is_array() && y.is_array()) {
      check_size(x.size() + y.size(), line);
      Json out = x;
      for (const auto& item : y) out.push_back(item);
      return Value::data(std::move(out));
    }
  }
  if (op == "*") {
    const bool left_seq = x.is_string() || x.is_array();
    if ((left_seq && is_int(y) && !y.is_number_float()) || ((y.is_string() || y.is_array()) && is_int(x))) {
      const Json& seq = left_seq ? x : y;
      const int64_t count = std::max<int64_t>(0, int_of(left_seq ? y : x, line));
      const size_t unit = seq.is_string() ? seq.get_ref<const std::string&>().size() : seq.size();
      if (unit != 0 && static_cast<uint64_t>(count) > kMaxBuiltSize / unit) check_size(kMaxBuiltSize + 1, line);
      if (seq.is_string()) {
        std::string out;
        for (int64_t i = 0; i < count; ++i) out += seq.get_ref<const std::string&>();
        return str_value(out);
      }
      Json out = Json::array();
      for (int64_t i = 0; i < count; ++i)
        for (const auto& item : seq) out.push_back(item);
      return Value::data(std::move(out));
    }
  }
  if (op == "%" && x.is_string()) fail_at(line, "unsupported printf-style formatting ('%' on a string)");
  fail_at(line, "unsupported operand type(s) for ", op, ": '", type_name(a), "' and '", type_name(b), "'");
}

bool contains_value(const Value& container, const Value& item, int line) {
  if (container.undef()) return false;  // jinja2's Undefined iterates as empty
  if (!container.is_data()) fail_at(line, "argument of type '", type_name(container), "' is not iterable");
  const Json& c = container.j();
  if (c.is_string()) {
    if (!is_str(item)) fail_at(line, "'in <string>' requires string as left operand, not ", type_name(item));
    return c.get_ref<const std::string&>().find(item.j().get_ref<const std::string&>()) != std::string::npos;
  }
  if (c.is_array()) {
    for (const auto& element : c)
      if (py_eq(container.child(element), item, line)) return true;
    return false;
  }
  if (c.is_object()) {
    if (is_str(item)) return c.contains(item.j().get_ref<const std::string&>());
    if (item.is_data() && (item.j().is_array() || item.j().is_object()))
      fail_at(line, "unhashable type: '", type_name(item), "'");
    return false;
  }
  fail_at(line, "argument of type '", type_name(c), "' is not iterable");
}

bool compare(const std::string& op, const Value& a, const Value& b, int line) {
  if (op == "==") return py_eq(a, b, line);
  if (op == "!=") return !py_eq(a, b, line);
  if (op == "in") return contains_value(b, a, line);
  if (op == "not in") return !contains_value(b, a, line);
  const int c = py_cmp(a, b, op.c_str(), line);
  if (op == "<") return c < 0;
  if (op == "<=") return c <= 0;
  if (op == ">") return c > 0;
  return c >= 0;
}

std::string_view join_units(const std::vector<std::string_view>& units, size_t b, size_t e) {
  if (b >= e) return {};
  return std::string_view(units[b].data(),
                          static_cast<size_t>(units[e - 1].data() + units[e - 1].size() - units[b].data()));
}

std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                                  bool from_right, int line) {
  std::vector<std::string> out;
  const auto limit_reached = [&] { return maxsplit >= 0 && static_cast<int64_t>(out.size()) >= maxsplit; };
  if (!sep) {
    const auto units = units_of(s);
    if (!from_right) {
      size_t i = 0;
      while (true) {
        while (i < units.size() && unit_is_space(units[i])) ++i;
        if (i == units.size()) break;
        if (limit_reached()) {
          out.emplace_back(join_units(units, i, units.size()));
          break;
        }
        size_t j = i;
        while (j < units.size() && !unit_is_space(units[j])) ++j;
        out.emplace_back(join_units(units, i, j));
        i = j;
      }
    } else {
      size_t i = units.size();
      while (true) {
        while (i > 0 && unit_is_space(units[i - 1])) --i;
        if (i == 0) break;
        if (limit_reached()) {
          out.emplace_back(join_units(units, 0, i));
          break;
        }
        size_t j = i;
        while (j > 0 && !unit_is_space(units[j - 1])) --j;
        out.emplace_back(join_units(units, j, i));
        i = j;
      }
      std::reverse(out.begin(), out.end());
    }
    return out;
  }
  if (sep->empty()) fail_at(line, "empty separator");
  if (!from_right) {
    size_t start = 0;
    for (size_t k; !limit_reached() && (k = s.find(*sep, start)) != std::string_view::npos; start = k + sep->size())
      out.emplace_back(s.substr(start, k - start));
    out.emplace_back(s.substr(start));
  } else {
    size_t end = s.size();
    while (!limit_reached() && end >= sep->size()) {
      const size_t k = s.rfind(*sep, end - sep->size());
      if (k == std::string_view::npos) break;
      out.emplace_back(s.substr(k + sep->size(), end - k - sep->size()));
      end = k;
    }
    out.emplace_back(s.substr(0, end));
    std::reverse(out.begin(), out.end());
  }
  return out;
}

std::string py_replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count,
                       int line) {
  std::string out;
  int64_t done = 0;
  if (old.empty()) {
    const auto units = units_of(s);
    for (const auto unit : units) {
      if (count < 0 || done < count) out += replacement, ++done;
      out += unit;
    }
    if (count < 0 || done < count) out += replacement;
  } else {
    size_t start = 0;
    for (size_t k; (count < 0 || done < count) && (k = s.find(old, start)) != std::string_view::npos;
         start = k + old.size()) {
      out += s.substr(start, k - start);
      out += replacement;
      ++done;
      check_size(out.size(), line);
    }
    out += s.substr(start);
  }
  check_size(out.size(), line);
  return out;
}

// str.splitlines() without keepends.
std::vector<std::string> py_splitlines(std::string_view s) {
  std::vector<std::string> out;
  std::string current;
  bool pending = false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    const char32_t c = d.cp;
    const bool brk = d.valid && (c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                                 c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029);
    if (brk) {
      out.push_back(std::move(current));
      current.clear();
      pending = false;
      i += (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ? 2 : d.len;
    } else {
      current.append(s.substr(i, d.len));
      pending = true;
      i += d.len;
    }
  }
  if (pending) out.push_back(std::move(current));
  return out;
}

template <class Pred>
bool all_units(std::string_view s, Pred pred) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    if (!d.valid || !pred(d.cp)) return false;
    i += d.len;
  }
  return true;
}

// str.islower() / str.isupper(): some cased character, and none of the other case.
bool py_is_case(std::string_view s, bool lower) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    i += d.len;
    if (!d.valid || !is_cased(d.cp)) continue;
    if (lower ? lower_cp(d.cp) != d.cp : upper_cp(d.cp) != d.cp) return false;
    cased = true;
  }
  return cased;
}

// json.dumps as transformers' tojson calls it.
struct JsonStyle {
  bool ascii = false;
  std::optional<std::string> indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};

void dump_string(std::string_view s, bool ascii, std::string& out) {
  static const char* hex = "0123456789abcdef";
  const auto u4 = [&](uint32_t v) {
    out += "\\u";
    for (int shift = 12; shift >= 0; shift -= 4) out += hex[(v >> shift) & 15];
  };
  out += '"';
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    const char32_t c = d.cp;
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
      out.append(s.substr(i, d.len));
    }
    i += d.len;
  }
  out += '"';
}

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

// Python's float() of a string: optional sign, digits with single underscores, inf/nan; surrounding spaces.
std::optional<double> parse_py_float(std::string_view text) {
  std::string s;
  const std::string_view t = py_strip(text, std::nullopt, true, true);
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_') {
      if (i == 0 || i + 1 == t.size() || !std::isdigit(static_cast<unsigned char>(t[i - 1])) ||
          !std::isdigit(static_cast<unsigned char>(t[i + 1])))
        return std::nullopt;
      continue;
    }
    s += static_cast<char>(std::tolower(static_cast<unsigned char>(t[i])));
  }
  std::string_view body = s;
  bool negative = false;
  if (!body.empty() && (body[0] == '+' || body[0] == '-')) negative = body[0] == '-', body.remove_prefix(1);
  if (body == "inf" || body == "infinity") return negative ? -INFINITY : INFINITY;
  if (body == "nan") return NAN;
  if (body.empty() || !(std::isdigit(static_cast<unsigned char>(body[0])) || body[0] == '.')) return std::nullopt;
  double v = 0;
  const auto res = std::from_chars(body.data(), body.data() + body.size(), v, std::chars_format::general);
  if (res.ec != std::errc() || res.ptr != body.data() + body.size()) return std::nullopt;
  return negative ? -v : v;
}

// Python's int() of a string in base 10.
std::optional<int64_t> parse_py_int(std::string_view text) {
  const std::string_view t = py_strip(text, std::nullopt, true, true);
  std::string digits;
  size_t i = 0;
  bool negative = false;
  if (i < t.size() && (t[i] == '+' || t[i] == '-')) negative = t[i++] == '-';
  for (; i < t.size(); ++i) {
    if (std::isdigit(static_cast<unsigned char>(t[i]))) {
      digits += t[i];
    } else if (t[i] == '_' && !digits.empty() && i + 1 < t.size() &&
               std::isdigit(static_cast<unsigned char>(t[i + 1]))) {
      continue;
    } else {
      return std::nullopt;
    }
  }
  if (digits.empty()) return std::nullopt;
  int64_t v = 0;
  if (std::from_chars(digits.data(), digits.data() + digits.size(), v).ec != std::errc()) return std::nullopt;
  return negative ? -v : v;
}

std::string html_escape(std::string_view s) {
  std::string out;
  for (const char c : s) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&#34;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

enum class Flow { Normal, Break, Continue };

class Renderer {
 public:
  Flow exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out);
  Value eval(const Expr& e, const std::shared_ptr<Scope>& scope);

 private:
  int macro_depth_ = 0;

  Flow exec_for(const Node& node, const std::shared_ptr<Scope>& scope, std::string& out);
  void assign(const Target& target, const Value& value, Scope& scope, int line);
  Args eval_args(const Expr& e, size_t first, const std::shared_ptr<Scope>& scope);
  Value eval_call(const Expr& e, const std::shared_ptr<Scope>& scope);
  Value call_value(const Value& f, const Args& args, int line);
  Value call_macro(const MacroRef& macro, const Args& args, int line, const Value* caller = nullptr);
  Value call_builtin(const std::string& name, const Args& args, int line);
  Value call_method(const Value& obj, const std::string& name, const Args& args, int line);
  Value filter(const std::string& name, const Value& v, const Args& args, int line);
  Value apply_filters(const std::vector<ExprPtr>& chain, Value v, const std::shared_ptr<Scope>& scope) {
    for (const auto& f : chain) v = filter(f->name, v, eval_args(*f, 1, scope), f->line);
    return v;
  }
  bool test(const std::string& name, const Value& v, const Args& args, int line);
  Value attr_path(const Value& item, const Value& attribute, int line);
  std::vector<Value> select(const std::string& fn, const Value& seq, const Args& args, bool by_attr, bool keep,
                            int line);
  std::vector<Value> sorted(const std::vector<Value>& items, bool case_sensitive, const std::optional<Value>& attribute,
                            int line);
};

Flow Renderer::exec(const Body& body, const std::shared_ptr<Scope>& scope, std::string& out) {
  for (const auto& node_ptr : body) {
    const Node& node = *node_ptr;
    switch (node.kind) {
      case NK::Text: out += node.text; break;
      case NK::Print: append_str(eval(*node.expr, scope), out, node.line); break;
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
        append_str(apply_filters(node.filters, str_value(text), scope), out, node.line);
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
        append_str(call_macro(*f.macro, args, node.line, &caller), out, node.line);
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
  std::vector<Value> items = iterate(eval(*node.expr, scope), node.line);
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
    auto inner = std::make_shared<Scope>();
    inner->parent = scope;
    assign(node.target, items[i], *inner, node.line);
    Json loop = {{"index", i + 1},  {"index0", i},        {"revindex", n - i}, {"revindex0", n - i - 1},
                 {"first", i == 0}, {"last", i + 1 == n}, {"length", n},       {"depth", 1},
                 {"depth0", 0}};
    if (i > 0) loop["previtem"] = to_element(items[i - 1], node.line);
    if (i + 1 < n) loop["nextitem"] = to_element(items[i + 1], node.line);
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
  switch (e.kind) {
    case EK::Const: return Value::shared(e.constant);
    case EK::Name: return lookup(scope, e.name);
    case EK::List: {
      Json out = Json::array();
      for (const auto& kid : e.kids) out.push_back(to_element(eval(*kid, scope), e.line));
      return Value::data(std::move(out));
    }
    case EK::Dict: {
      Json out = Json::object();
      for (size_t i = 0; i + 1 < e.kids.size(); i += 2) {
        const Value key = eval(*e.kids[i], scope);
        if (!is_str(key)) fail_at(e.line, "dict keys must be strings, not '", type_name(key), "'");
        out[key.j().get<std::string>()] = to_element(eval(*e.kids[i + 1], scope), e.line);
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

// ---------------------------------------------------------------------------------------------------------------
// Filters and tests, following jinja2's definitions (jinja2/filters.py, jinja2/tests.py).

// jinja2's make_attrgetter: "a.b.0" walks items, digit parts as list indices.
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

// int(s, base) for base != 10: optional sign, the prefix matching the base, single underscores between digits.
std::string without_prefix_and_underscores(std::string_view text, int64_t base) {
  std::string_view t = py_strip(text, std::nullopt, true, true);
  std::string out;
  if (!t.empty() && (t[0] == '+' || t[0] == '-')) {
    if (t[0] == '-') out += '-';
    t.remove_prefix(1);
  }
  if (t.size() >= 2 && t[0] == '0') {
    const char p = static_cast<char>(std::tolower(static_cast<unsigned char>(t[1])));
    if ((p == 'x' && base == 16) || (p == 'o' && base == 8) || (p == 'b' && base == 2)) t.remove_prefix(2);
  }
  for (size_t i = 0; i < t.size(); ++i) {
    if (t[i] == '_' && i > 0 && i + 1 < t.size() && t[i - 1] != '_') continue;
    out += t[i];
  }
  return out;
}

// jinja2's title filter: words start after runs of whitespace, '-', '(', '{', '[', '<'.
std::string jinja_title(std::string_view s) {
  bool word_start = true;
  return map_units(s, [&](char32_t c, size_t, std::string& out) {
    const bool separator = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    append_utf8(out, separator ? c : word_start ? upper_cp(c) : lower_cp(c));
    word_start = separator;
  });
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
      style.item_sep = ",";
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
std::string render(const Program& program, const In& context) {
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

}  // namespace ernie::jinja

namespace ernie {

ChatTemplate ChatTemplate::parse(std::string_view source) {
  try {
    auto program = std::make_shared<jinja::Program>();
    program->body = jinja::Parser(jinja::Lexer(source).run()).parse_template();
    return ChatTemplate(std::move(program));
  } catch (const Error&) {
    throw;
  } catch (const std::exception& e) {
    jinja::fail_line(std::string("chat template: ") + e.what());
  }
}

std::string ChatTemplate::render(const nlohmann::json& context) const { return jinja::render(*program_, context); }

std::string ChatTemplate::render_ordered(const nlohmann::ordered_json& context) const {
  return jinja::render(*program_, context);
}

}  // namespace ernie
