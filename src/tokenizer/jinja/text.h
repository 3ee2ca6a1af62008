// Python's str semantics over UTF-8 (utf8.h): the str methods templates call, repr() of a str, str() of a float,
// int() and float() of a string, and the text transforms of jinja2's filters. Pure functions, safe on any
// thread; those taking `line` raise ernie::Error at that template line (an oversized result too, see
// check_size).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace ernie::jinja {

// str.strip / lstrip / rstrip; without `chars` they strip Unicode whitespace. Returns a view into `s`.
std::string_view py_strip(std::string_view s, const std::optional<std::string>& chars, bool left, bool right);

// str.upper / lower / capitalize. Python's special multi-character mappings are not reproduced except ß -> SS.
std::string py_upper(std::string_view s);
std::string py_lower(std::string_view s);
std::string py_capitalize(std::string_view s);
// str.title(): a cased letter after an uncased character starts a word.
std::string py_title(std::string_view s);
// jinja2's title filter: words start after runs of whitespace, '-', '(', '{', '[', '<'.
std::string jinja_title(std::string_view s);

// str.split / str.rsplit (from_right): on runs of whitespace without `sep`; maxsplit < 0 for no limit.
std::vector<std::string> py_split(std::string_view s, const std::optional<std::string>& sep, int64_t maxsplit,
                                  bool from_right, int line);
// str.replace; count < 0 replaces every occurrence.
std::string py_replace(std::string_view s, std::string_view old, std::string_view replacement, int64_t count, int line);
// str.splitlines() without keepends.
std::vector<std::string> py_splitlines(std::string_view s);
// str.islower() / str.isupper(): some cased character, and none of the other case.
bool py_is_case(std::string_view s, bool lower);
// repr() of a str appended to `out`: quoted as Python quotes it, control characters escaped.
void py_repr_string(std::string_view s, std::string& out);
// jinja2's escape filter: & < > " ' as HTML entities.
std::string html_escape(std::string_view s);

// A float formatted as Python's str() / repr() do.
std::string py_float(double v);
// Python's float() of a string: optional sign, digits with single underscores, inf/nan; surrounding spaces.
std::optional<double> parse_py_float(std::string_view text);
// Python's int() of a string in base 10.
std::optional<int64_t> parse_py_int(std::string_view text);
// int(s, base) for base != 10: optional sign, the prefix matching the base, single underscores between digits.
// Returns the sign and digits for std::from_chars; whether they are valid is the caller's check.
std::string without_prefix_and_underscores(std::string_view text, int64_t base);

}  // namespace ernie::jinja
