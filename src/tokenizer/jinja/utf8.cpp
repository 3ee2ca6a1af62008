// Code-point walks and classes over core/utf8.h's decoder; see utf8.h.
#include "tokenizer/jinja/utf8.h"

#include <locale.h>

#include <cwctype>

namespace ernie::jinja {

std::vector<std::string_view> units_of(std::string_view s) {
  std::vector<std::string_view> out;
  out.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const size_t len = decode(s, i).length;
    out.push_back(s.substr(i, len));
    i += len;
  }
  return out;
}

size_t count_units(std::string_view s) {
  size_t n = 0;
  for (size_t i = 0; i < s.size(); i += decode(s, i).length) ++n;
  return n;
}

std::string_view join_units(const std::vector<std::string_view>& units, size_t b, size_t e) {
  if (b >= e) return {};
  return std::string_view(units[b].data(),
                          static_cast<size_t>(units[e - 1].data() + units[e - 1].size() - units[b].data()));
}

bool is_space(char32_t c) {
  return (c >= 0x09 && c <= 0x0D) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
         (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

bool unit_is_space(std::string_view u) {
  const Unit d = decode(u, 0);
  return d.valid && is_space(d.code_point);
}

bool all_space(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const Unit d = decode(s, i);
    if (!d.valid || !is_space(d.code_point)) return false;
    i += d.length;
  }
  return true;
}

namespace {

locale_t utf8_locale() {
  static const locale_t loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
  return loc;
}

}  // namespace

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

bool is_digit_cp(char32_t c) {
  return c >= '0' && c <= '9';
}

bool is_cased(char32_t c) {
  return upper_cp(c) != c || lower_cp(c) != c;
}

}  // namespace ernie::jinja
