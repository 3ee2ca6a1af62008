// Python's operators on values; see operators.h.
#include "tokenizer/jinja/operators.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

std::string missing_attr(const Value& obj, const std::string& name) {
  // Built by appending: "'" + std::string trips a GCC 12 -Wrestrict false alarm here.
  std::string out = "'";
  out += type_name(obj);
  out += " object' has no attribute '";
  out += name;
  out += "'";
  return out;
}

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
  std::string why = "'";  // appended, not "'" + ..., for the same GCC 12 -Wrestrict false alarm
  why += type_name(obj);
  why += " object' has no element ";
  why += shown;
  return Value::undefined(std::move(why));
}

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

int64_t negate(int64_t v, int line) {
  if (v == std::numeric_limits<int64_t>::min()) fail_at(line, "integer overflow");
  return -v;
}

namespace {

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

}  // namespace

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
      const size_t unit = seq.is_string() ? seq.get_ref<const std::string&>().size() : seq.size();
      // An empty sequence repeated any number of times is empty: return before looping `count` times.
      const int64_t count = unit == 0 ? 0 : std::max<int64_t>(0, int_of(left_seq ? y : x, line));
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

}  // namespace ernie::jinja
