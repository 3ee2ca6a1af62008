// UTF-8 for the interpreter, over core/utf8.h's decoder. Python strings are sequences of code points, so lengths,
// indices and slices count code points ("units"). Strings from the context may hold invalid UTF-8; such a byte
// counts as one unit so nothing reads out of bounds. Pure functions, safe on any thread.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "core/utf8.h"

namespace ernie::jinja {

// A code point of a string, or one invalid byte (U+FFFD, length 1) where the bytes are not UTF-8.
using Unit = utf8::Decoded;
using utf8::decode;

// The units of `s`, as views into it.
std::vector<std::string_view> units_of(std::string_view s);
size_t count_units(std::string_view s);
// The bytes spanned by units[b, e), as a view into the string the units came from.
std::string_view join_units(const std::vector<std::string_view>& units, size_t b, size_t e);

// str.isspace(), which is also what jinja2's \s and str.strip() use.
bool is_space(char32_t c);
bool unit_is_space(std::string_view u);
bool all_space(std::string_view s);

// Case mapping and classes per code point through glibc's C.UTF-8 tables (ASCII only if that locale is missing).
char32_t upper_cp(char32_t c);
char32_t lower_cp(char32_t c);
bool is_alpha_cp(char32_t c);
bool is_digit_cp(char32_t c);
bool is_cased(char32_t c);

// Applies `map(cp, index, out)` to each unit; an invalid byte is copied through untouched.
template <class Map>
std::string map_units(std::string_view s, Map map) {
  std::string out;
  out.reserve(s.size());
  size_t index = 0;
  for (size_t i = 0; i < s.size(); ++index) {
    const Unit d = decode(s, i);
    if (d.valid) {
      map(d.code_point, index, out);
    } else {
      out += s[i];
    }
    i += d.length;
  }
  return out;
}

// True if `s` is non-empty and every unit is valid and satisfies `pred` (str.isdigit() and the like).
template <class Pred>
bool all_units(std::string_view s, Pred pred) {
  if (s.empty()) return false;
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    if (!d.valid || !pred(d.code_point)) return false;
    i += d.length;
  }
  return true;
}

}  // namespace ernie::jinja
