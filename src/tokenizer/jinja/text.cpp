// Python's str algorithms and number <-> text conversions; see text.h.
#include "tokenizer/jinja/text.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

#include "tokenizer/jinja/common.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

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

std::string py_upper(std::string_view s) {
  return map_units(s, [](char32_t c, size_t, std::string& out) {
    if (c == 0xDF) {
      out += "SS";
    } else {
      utf8::append(out, upper_cp(c));
    }
  });
}

std::string py_lower(std::string_view s) {
  return map_units(s, [](char32_t c, size_t, std::string& out) { utf8::append(out, lower_cp(c)); });
}

std::string py_capitalize(std::string_view s) {
  return map_units(
      s, [](char32_t c, size_t i, std::string& out) { utf8::append(out, i == 0 ? upper_cp(c) : lower_cp(c)); });
}

std::string py_title(std::string_view s) {
  bool prev_cased = false;
  return map_units(s, [&](char32_t c, size_t, std::string& out) {
    utf8::append(out, prev_cased ? lower_cp(c) : upper_cp(c));
    prev_cased = is_cased(c);
  });
}

std::string jinja_title(std::string_view s) {
  bool word_start = true;
  return map_units(s, [&](char32_t c, size_t, std::string& out) {
    const bool separator = is_space(c) || c == '-' || c == '(' || c == '{' || c == '[' || c == '<';
    utf8::append(out, separator ? c : word_start ? upper_cp(c) : lower_cp(c));
    word_start = separator;
  });
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

std::vector<std::string> py_splitlines(std::string_view s) {
  std::vector<std::string> out;
  std::string current;
  bool pending = false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    const char32_t c = d.code_point;
    const bool brk = d.valid && (c == '\n' || c == '\r' || c == 0x0B || c == 0x0C || c == 0x1C || c == 0x1D ||
                                 c == 0x1E || c == 0x85 || c == 0x2028 || c == 0x2029);
    if (brk) {
      out.push_back(std::move(current));
      current.clear();
      pending = false;
      i += (c == '\r' && i + 1 < s.size() && s[i + 1] == '\n') ? 2 : d.length;
    } else {
      current.append(s.substr(i, d.length));
      pending = true;
      i += d.length;
    }
  }
  if (pending) out.push_back(std::move(current));
  return out;
}

bool py_is_case(std::string_view s, bool lower) {
  bool cased = false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    i += d.length;
    if (!d.valid || !is_cased(d.code_point)) continue;
    if (lower ? lower_cp(d.code_point) != d.code_point : upper_cp(d.code_point) != d.code_point) return false;
    cased = true;
  }
  return cased;
}

void py_repr_string(std::string_view s, std::string& out) {
  const bool has_single = s.find('\'') != std::string_view::npos;
  const bool has_double = s.find('"') != std::string_view::npos;
  const char quote = has_single && !has_double ? '"' : '\'';
  out += quote;
  for (const char c : s) {
    if (c == quote || c == '\\') {
      out += '\\';
      out += c;
    } else if (!append_control_escape(out, c)) {
      out += c;
    }
  }
  out += quote;
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
    if (digits.size() > 1) out.append(".").append(digits, 1);  // not "." + ...: a GCC 12 -Wrestrict false alarm
    out += exp < 0 ? "e-" : "e+";
    const int a = std::abs(exp);
    if (a < 10) out += '0';
    out += std::to_string(a);
  }
  return out;
}

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

}  // namespace ernie::jinja
