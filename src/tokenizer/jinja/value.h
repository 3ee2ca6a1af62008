// Values: JSON data (shared, never copied on lookup) plus jinja's undefined, namespace objects, macros and the
// global functions, with the Python semantics the templates were written against: str(), repr(), truthiness, ==,
// ordering and json.dumps. In lists and dicts an undefined element is stored as a "discarded" JSON value.
// A Value belongs to one render (a Namespace's attributes change under {% set ns.x %}), so it is not shared
// across threads; the data it points into is never modified. Functions taking `line` raise ernie::Error at that
// template line, and bound their recursion by kMaxDataDepth.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include "tokenizer/jinja/common.h"

namespace ernie::jinja {

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

struct Scope {
  std::shared_ptr<Scope> parent;
  std::unordered_map<std::string, Value> vars;
};

// Evaluated call arguments: positional, then keyword in call order.
struct Args {
  std::vector<Value> pos;
  std::vector<std::pair<std::string, Value>> kw;
};

// Python's type name, as error messages show it.
std::string type_name(const Json& j);
std::string type_name(const Value& v);
// Raises the error jinja2's Undefined raises when `v` (undefined) is used: v.text.
[[noreturn]] void fail_undefined(const Value& v, int line);
// Fails once data is nested more than kMaxDataDepth levels deep.
void require_depth(int depth, int line);

// Numbers. Bool is an int in Python; ints are 64-bit, unsigned JSON beyond int64 only reaches wide_int_of.
bool is_int(const Json& j);
bool is_num(const Json& j);
int64_t int_of(const Json& j, int line);  // fails when the value exceeds int64
__int128 wide_int_of(const Json& j);
double float_of(const Json& j);
std::string int_text(const Json& j);

bool is_none(const Value& v);
bool is_str(const Value& v);
Value str_value(std::string_view s);
// What a list or dict stores for `v`: data as is, undefined as a discarded value; anything else fails.
Json to_element(const Value& v, int line);
Value list_value(const std::vector<Value>& items, int line);

// str(x) for data: strings as themselves, containers as Python's repr of them.
void py_str(const Json& j, std::string& out, int depth, int line);
void py_repr(const Json& j, std::string& out, int depth, int line);
// str(v) as {{ v }} prints it: undefined prints as "", macros and namespaces as Python shows them.
void append_str(const Value& v, std::string& out, int line, int depth = 0);
std::string to_str(const Value& v, int line);

bool truthy(const Value& v);
bool py_eq(const Value& a, const Value& b, int line);
// Python's ordering: numbers with numbers, strings by code point, lists lexicographically; anything else is the
// TypeError jinja2 would raise, naming `op`. Returns <0, 0 or >0.
int py_cmp(const Value& a, const Value& b, const char* op, int line);

// json.dumps as transformers' tojson calls it.
struct JsonStyle {
  bool ascii = false;
  std::optional<std::string> indent;
  std::string item_sep = ", ";
  std::string key_sep = ": ";
  bool sort_keys = false;
};

// Appends json.dumps(j) at nesting `level`; undefined and binary data fail as not JSON serializable.
void dump_json(const Json& j, const JsonStyle& style, int level, std::string& out, int line);

}  // namespace ernie::jinja
