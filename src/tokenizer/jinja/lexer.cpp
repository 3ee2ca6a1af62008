// The lexer; see lexer.h.
#include "tokenizer/jinja/lexer.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cstdint>
#include <optional>

#include "tokenizer/jinja/text.h"
#include "tokenizer/jinja/utf8.h"

namespace ernie::jinja {

namespace {

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
      i += d.length;
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
      if (!is_space(d.code_point)) break;
      pos += d.length;
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
          utf8::append(out, hex(i + 1, 2));
          i += 2;
          break;
        case 'u':
          utf8::append(out, hex(i + 1, 4));
          i += 4;
          break;
        case 'U':
          utf8::append(out, hex(i + 1, 8));
          i += 8;
          break;
        default:
          if (e >= '0' && e <= '7') {
            char32_t v = 0;
            size_t k = i;
            for (; k < s.size() && k < i + 3 && s[k] >= '0' && s[k] <= '7'; ++k)
              v = v * 8 + static_cast<char32_t>(s[k] - '0');
            utf8::append(out, v);
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
      if (is_space(d.code_point)) {
        pos += d.length;
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
        if (op.empty()) fail_at(line, "unexpected character '", src_.substr(pos, d.length), "'");
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

}  // namespace

std::vector<Chunk> lex(std::string_view source) {
  return Lexer(source).run();
}

}  // namespace ernie::jinja
