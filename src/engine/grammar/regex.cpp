#include "engine/grammar/regex.h"

#include <algorithm>
#include <cstdio>
#include <optional>
#include <vector>

#include "core/utf8.h"
#include "engine/grammar/code_points.h"
#include "engine/grammar/json_schema.h"

namespace ernie {
namespace {

using code_points::complement;
using code_points::merged;
using code_points::Range;
using code_points::Ranges;

const Ranges kDigit = {{'0', '9'}};
const Ranges kWord = {{'0', '9'}, {'A', 'Z'}, {'_', '_'}, {'a', 'z'}};
const Ranges kSpace = {{'\t', '\r'}, {' ', ' '}};  // \t \n \v \f \r and the space

// A code point as a GBNF class member.
std::string class_char(char32_t c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return std::string(1, char(c));
  char buffer[16];
  std::snprintf(buffer, sizeof buffer, "\\U%08X", static_cast<unsigned>(c));
  return buffer;
}

void append_range(std::string& out, char32_t lo, char32_t hi) {
  out += class_char(lo);
  if (hi == lo) return;
  out += '-';
  out += class_char(hi);
}

// JSON's escape of a character a string cannot hold as itself.
std::string json_escape(char32_t c) {
  switch (c) {
    case '"': return "\\\"";
    case '\\': return "\\\\";
    case '\b': return "\\b";
    case '\f': return "\\f";
    case '\n': return "\\n";
    case '\r': return "\\r";
    case '\t': return "\\t";
    default: {
      char buffer[8];
      std::snprintf(buffer, sizeof buffer, "\\u%04x", static_cast<unsigned>(c));
      return buffer;
    }
  }
}

// The characters of `ranges` as they appear inside a JSON string: a class of those written as themselves, and
// their escapes for the rest.
std::string json_chars(const Ranges& ranges) {
  const Ranges special = {{0, 0x1F}, {'"', '"'}, {'\\', '\\'}};
  std::vector<std::string> alternatives;
  std::string plain;
  for (const auto& [lo, hi] : merged(ranges)) {
    // The part of [lo, hi] outside the specials, in up to four pieces.
    char32_t from = lo;
    for (const auto& [slo, shi] : special) {
      if (from > hi) break;
      if (shi < from) continue;
      if (slo > from) {
        const char32_t to = std::min<char32_t>(hi, slo - 1);
        append_range(plain, from, to);
      }
      for (char32_t c = std::max(from, slo); c <= std::min(hi, shi); ++c)
        alternatives.push_back(gbnf_literal(json_escape(c)));
      from = std::max<char32_t>(from, shi + 1);
    }
    if (from <= hi) append_range(plain, from, hi);
  }
  if (!plain.empty()) alternatives.insert(alternatives.begin(), "[" + plain + "]");
  if (alternatives.empty()) throw SchemaError("pattern", "the pattern has a character class that matches nothing");
  if (alternatives.size() == 1) return alternatives[0];
  std::string out = "(";
  for (size_t i = 0; i < alternatives.size(); ++i) out += (i ? " | " : "") + alternatives[i];
  return out + ")";
}

class RegexCompiler {
 public:
  explicit RegexCompiler(std::string_view pattern) : p_(pattern) {}

  std::string run() {
    if (peek() == '^') ++pos_;
    std::string out = alternation();
    if (pos_ < p_.size()) error("unexpected ')'");
    return out.empty() ? "\"\"" : out;
  }

 private:
  char peek() const { return pos_ < p_.size() ? p_[pos_] : '\0'; }
  bool at_end() const { return pos_ >= p_.size(); }
  [[noreturn]] void error(const std::string& what) const {
    throw SchemaError("pattern", "unsupported pattern /" + std::string(p_) + "/: " + what + " (at offset " +
                                     std::to_string(pos_) + ")");
  }

  std::string alternation() {
    std::vector<std::string> branches{concatenation()};
    while (peek() == '|') {
      ++pos_;
      branches.push_back(concatenation());
    }
    if (branches.size() == 1) return branches[0];
    std::string out = "(";
    for (size_t i = 0; i < branches.size(); ++i) out += (i ? " | " : "") + (branches[i].empty() ? "\"\"" : branches[i]);
    return out + ")";
  }

  std::string concatenation() {
    std::string out;
    while (!at_end() && peek() != '|' && peek() != ')') {
      if (peek() == '$') {
        ++pos_;
        if (!at_end()) error("'$' before the end");
        break;
      }
      std::string item = quantified(atom());
      if (!item.empty()) out += (out.empty() ? "" : " ") + item;
    }
    return out;
  }

  size_t number() {
    const size_t start = pos_;
    size_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      value = value * 10 + static_cast<size_t>(peek() - '0');
      if (value > 100000) error("a repetition count past 100000");
      ++pos_;
    }
    if (pos_ == start) error("a '{' that is no repetition");
    return value;
  }

  std::string quantified(std::string atom) {
    while (true) {
      const char c = peek();
      std::string postfix;
      if (c == '*' || c == '+' || c == '?') {
        ++pos_;
        postfix = std::string(1, c);
      } else if (c == '{') {
        ++pos_;
        const size_t low = number();
        postfix = "{";
        postfix += std::to_string(low);
        if (peek() == ',') {
          ++pos_;
          postfix += ",";
          if (peek() != '}') {
            const size_t high = number();
            if (high < low) error("{m,n} with n < m");
            postfix += std::to_string(high);
          }
        }
        if (peek() != '}') error("an unterminated repetition");
        ++pos_;
        postfix += "}";
      } else {
        return atom;
      }
      if (peek() == '?') ++pos_;  // lazy: the same strings
      if (atom.empty()) error("a quantifier with nothing to repeat");
      std::string wrapped = "(";
      wrapped += atom;
      wrapped += ")";
      wrapped += postfix;
      atom = std::move(wrapped);
    }
  }

  char32_t hex(int digits) {
    char32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) error("a bad hexadecimal escape");
      value = value * 16 + static_cast<char32_t>(d);
      ++pos_;
    }
    return value;
  }

  char32_t literal_char() {
    const auto decoded = utf8::decode(p_, pos_);
    if (!decoded.valid) error("invalid UTF-8");
    pos_ += decoded.length;
    return decoded.code_point;
  }

  // After a backslash: a class escape (\d ...) fills `set`; otherwise returns the character meant.
  std::optional<char32_t> escape(Ranges& set, bool in_class) {
    if (at_end()) error("a trailing backslash");
    const char c = p_[pos_++];
    switch (c) {
      case 'd': set = kDigit; return std::nullopt;
      case 'w': set = kWord; return std::nullopt;
      case 's': set = kSpace; return std::nullopt;
      case 'D':
      case 'W':
      case 'S':
        if (in_class) error(std::string("\\") + c + " inside a class");
        set = complement(c == 'D' ? kDigit : c == 'W' ? kWord : kSpace);
        return std::nullopt;
      case 't': return '\t';
      case 'n': return '\n';
      case 'r': return '\r';
      case 'f': return '\f';
      case 'v': return '\v';
      case 'x': return hex(2);
      case 'u': return hex(4);
      default:
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) {
          error(std::string("the escape \\") + c);  // \b, \B, backreferences, \p{...}
        }
        --pos_;
        return literal_char();
    }
  }

  std::string char_class() {
    const bool negated = peek() == '^';
    if (negated) ++pos_;
    Ranges set;
    bool first = true;
    while (at_end() || peek() != ']' || first) {
      if (at_end()) error("an unterminated class");
      first = false;
      Ranges escaped;
      char32_t lo;
      if (peek() == '\\') {
        ++pos_;
        const auto c = escape(escaped, true);
        if (!c) {
          set.insert(set.end(), escaped.begin(), escaped.end());
          continue;
        }
        lo = *c;
      } else {
        lo = literal_char();
      }
      char32_t hi = lo;
      if (peek() == '-' && pos_ + 1 < p_.size() && p_[pos_ + 1] != ']') {
        ++pos_;
        if (peek() == '\\') {
          ++pos_;
          const auto c = escape(escaped, true);
          if (!c) error("a class escape as a range bound");
          hi = *c;
        } else {
          hi = literal_char();
        }
        if (hi < lo) error("a range out of order");
      }
      set.emplace_back(lo, hi);
    }
    ++pos_;
    return json_chars(negated ? complement(set) : set);
  }

  std::string atom() {
    const char c = peek();
    if (c == '(') {
      if (++depth_ > 100) error("groups nested deeper than 100");  // recursion: bounded against hostile patterns
      ++pos_;
      if (peek() == '?') {
        if (p_.substr(pos_, 2) != "?:") error("lookaround and named groups");
        pos_ += 2;
      }
      std::string inner = alternation();
      if (peek() != ')') error("an unclosed group");
      ++pos_;
      --depth_;
      return inner.empty() ? "" : "(" + inner + ")";
    }
    if (c == '[') {
      ++pos_;
      return char_class();
    }
    if (c == '.') {
      ++pos_;
      return json_chars(complement({{'\n', '\n'}, {'\r', '\r'}}));
    }
    if (c == '\\') {
      ++pos_;
      Ranges set;
      const auto ch = escape(set, false);
      return json_chars(ch ? Ranges{{*ch, *ch}} : set);
    }
    if (c == '^') error("'^' after the start");
    if (c == '*' || c == '+' || c == '?' || c == '{') error("a quantifier with nothing to repeat");
    const char32_t ch = literal_char();
    return json_chars({{ch, ch}});
  }

  std::string_view p_;
  size_t pos_ = 0;
  int depth_ = 0;
};

}  // namespace

std::string regex_to_gbnf(std::string_view pattern) {
  return RegexCompiler(pattern).run();
}

}  // namespace ernie
