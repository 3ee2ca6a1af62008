#include "engine/grammar/grammar.h"

#include <algorithm>
#include <map>
#include <optional>
#include <set>
#include <unordered_map>

#include "core/error.h"
#include "core/utf8.h"
#include "engine/grammar/code_points.h"

namespace ernie {
namespace {

constexpr uint32_t kMaxRepetition = 100000;
constexpr int kMaxGroupDepth = 100;
constexpr size_t kMaxElements = 2'000'000;
constexpr char32_t kMaxCodePoint = code_points::kMax;

using code_points::complement;
using code_points::Range;
using Piece = std::vector<Grammar::Element>;  // a run of elements, before it is placed in an alternative

bool piece_less(const Piece& a, const Piece& b) {
  return std::lexicographical_compare(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return std::pair(x.kind, x.index) < std::pair(y.kind, y.index);
  });
}

// Sorted, merged, without surrogates (which UTF-8 cannot encode).
std::vector<Range> normalized(const std::vector<Range>& ranges) {
  std::vector<Range> cut;
  for (const auto& [lo, hi] : code_points::merged(ranges)) {
    if (lo < 0xD800) cut.emplace_back(lo, std::min<char32_t>(hi, 0xD7FF));
    if (hi > 0xDFFF) cut.emplace_back(std::max<char32_t>(lo, 0xE000), hi);
  }
  return code_points::merged(cut);
}

// The UTF-8 encodings of the code points in [lo, hi] (one encoded length, no surrogates), as sequences of byte
// ranges: each sequence matches exactly the encodings of one sub-range. Splits the range until every byte position
// ranges independently, e.g. [U+0800, U+FFFF] -> E0 [A0-BF] [80-BF] | [E1-EF] [80-BF] [80-BF].
void utf8_sequences(char32_t lo, char32_t hi, std::vector<std::vector<std::pair<uint8_t, uint8_t>>>& out) {
  for (const char32_t boundary : {char32_t{0x7F}, char32_t{0x7FF}, char32_t{0xFFFF}}) {
    if (lo <= boundary && hi > boundary) {
      utf8_sequences(lo, boundary, out);
      utf8_sequences(boundary + 1, hi, out);
      return;
    }
  }
  if (hi <= 0x7F) {
    out.push_back({{static_cast<uint8_t>(lo), static_cast<uint8_t>(hi)}});
    return;
  }
  const int length = hi <= 0x7FF ? 2 : hi <= 0xFFFF ? 3 : 4;
  for (int i = 1; i < length; ++i) {
    const char32_t low_bits = (char32_t{1} << (6 * i)) - 1;  // the last i continuation bytes
    if ((lo & ~low_bits) != (hi & ~low_bits)) {
      if ((lo & low_bits) != 0) {
        utf8_sequences(lo, lo | low_bits, out);
        utf8_sequences((lo | low_bits) + 1, hi, out);
        return;
      }
      if ((hi & low_bits) != low_bits) {
        utf8_sequences(lo, (hi & ~low_bits) - 1, out);
        utf8_sequences(hi & ~low_bits, hi, out);
        return;
      }
    }
  }
  std::string a, b;
  utf8::append(a, lo);
  utf8::append(b, hi);
  std::vector<std::pair<uint8_t, uint8_t>> sequence;
  for (size_t k = 0; k < a.size(); ++k) sequence.emplace_back(a[k], b[k]);
  out.push_back(std::move(sequence));
}

}  // namespace

// Reads GBNF into rules whose alternatives are still separate vectors, then lays them out in one array.
class GbnfParser {
 public:
  explicit GbnfParser(std::string_view text) : text_(text) {}

  Grammar run(std::string_view root) {
    skip_space(true);
    while (!at_end()) {
      const size_t start = pos_;
      const std::string name = read_name();
      const uint32_t rule = rule_id(name);
      if (defined_[rule]) error_at(start, "rule '" + name + "' is defined twice");
      defined_[rule] = true;
      skip_space(false);
      if (text_.substr(pos_, 3) != "::=") error("expected '::=' after the rule name '" + name + "'");
      pos_ += 3;
      skip_space(true);
      auto alternatives = read_alternatives(false);  // may add rules: assign after
      bodies_[rule] = std::move(alternatives);
      if (!at_end() && peek() != '\n') error("unexpected character");
      skip_space(true);
    }
    for (size_t r = 0; r < names_.size(); ++r) {
      if (!defined_[r] && !generated_[r]) error_at(first_use_[r], "rule '" + names_[r] + "' is used but not defined");
    }
    const auto found = ids_.find(std::string(root));
    if (found == ids_.end() || !defined_[found->second]) fail("the grammar has no '", root, "' rule");
    Grammar grammar = layout();
    grammar.root_ = found->second;
    check_left_recursion(grammar);
    return grammar;
  }

 private:
  // ---- text -------------------------------------------------------------------------------------------------------
  bool at_end() const { return pos_ >= text_.size(); }
  char peek() const { return at_end() ? '\0' : text_[pos_]; }

  [[noreturn]] void error_at(size_t at, const std::string& message) const {
    size_t line = 1, column = 1;
    for (size_t i = 0; i < at && i < text_.size(); ++i) {
      if (text_[i] == '\n') {
        ++line;
        column = 1;
      } else {
        ++column;
      }
    }
    fail("grammar line ", line, ", column ", column, ": ", message);
  }
  [[noreturn]] void error(const std::string& message) const { error_at(pos_, message); }

  void skip_space(bool newlines) {
    while (!at_end()) {
      const char c = peek();
      if (c == ' ' || c == '\t' || c == '\r' || (newlines && c == '\n')) {
        ++pos_;
      } else if (c == '#') {
        while (!at_end() && peek() != '\n') ++pos_;
      } else {
        break;
      }
    }
  }

  static bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  }
  std::string read_name() {
    const size_t start = pos_;
    while (!at_end() && name_char(peek())) ++pos_;
    if (start == pos_) error("expected a rule name");
    return std::string(text_.substr(start, pos_ - start));
  }

  char32_t read_code_point() {
    const auto decoded = utf8::decode(text_, pos_);
    if (!decoded.valid) error("the grammar is not valid UTF-8");
    pos_ += decoded.length;
    return decoded.code_point;
  }
  char32_t read_hex(int digits) {
    char32_t value = 0;
    for (int i = 0; i < digits; ++i) {
      const char c = peek();
      const int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
      if (d < 0) error("expected " + std::to_string(digits) + " hexadecimal digits");
      value = value * 16 + static_cast<char32_t>(d);
      ++pos_;
    }
    if (value > kMaxCodePoint) error("code point past U+10FFFF");
    return value;
  }
  // One character of a literal or class, escapes resolved.
  char32_t read_char() {
    if (at_end()) error("unexpected end of the grammar");
    if (peek() != '\\') return read_code_point();
    ++pos_;
    if (at_end()) error("unexpected end of the grammar after '\\'");
    const char c = text_[pos_++];
    switch (c) {
      case 'n': return '\n';
      case 'r': return '\r';
      case 't': return '\t';
      case 'x': return read_hex(2);
      case 'u': return read_hex(4);
      case 'U': return read_hex(8);
      default: --pos_; return read_code_point();  // \\ \" \[ \] \- \^ and any other character stand for themselves
    }
  }

  // ---- structure --------------------------------------------------------------------------------------------------
  std::vector<Piece> read_alternatives(bool nested) {
    std::vector<Piece> alternatives;
    alternatives.push_back(read_sequence(nested));
    while (true) {
      if (!nested) {
        // "a\n  | b": a line that starts with '|' continues the rule.
        size_t ahead = pos_;
        while (ahead < text_.size() &&
               (text_[ahead] == ' ' || text_[ahead] == '\t' || text_[ahead] == '\r' || text_[ahead] == '\n')) {
          ++ahead;
        }
        if (ahead < text_.size() && text_[ahead] == '|') pos_ = ahead;
      }
      if (peek() != '|') break;
      ++pos_;
      skip_space(true);
      alternatives.push_back(read_sequence(nested));
    }
    return alternatives;
  }

  Piece read_sequence(bool nested) {
    Piece sequence;
    while (!at_end()) {
      const char c = peek();
      if (c == '|' || c == ')' || c == '\n') break;
      Piece item = read_primary();
      skip_space(nested);
      item = read_postfix(std::move(item));
      skip_space(nested);
      sequence.insert(sequence.end(), item.begin(), item.end());
      if (sequence.size() > kMaxElements) error("the grammar is too large");
    }
    return sequence;
  }

  Piece read_primary() {
    const char c = peek();
    if (c == '"') {
      ++pos_;
      Piece piece;
      while (peek() != '"') {
        if (at_end()) error("unterminated literal");
        std::string bytes;
        utf8::append(bytes, read_char());
        for (const char b : bytes) piece.push_back(byte_element(static_cast<uint8_t>(b), static_cast<uint8_t>(b)));
      }
      ++pos_;
      return piece;
    }
    if (c == '[') {
      ++pos_;
      const bool negated = peek() == '^';
      if (negated) ++pos_;
      std::vector<Range> ranges;
      while (peek() != ']') {
        if (at_end()) error("unterminated character class");
        const char32_t lo = read_char();
        char32_t hi = lo;
        if (peek() == '-' && pos_ + 1 < text_.size() && text_[pos_ + 1] != ']') {
          ++pos_;
          hi = read_char();
          if (hi < lo) error("character range out of order");
        }
        ranges.emplace_back(lo, hi);
      }
      ++pos_;
      return class_piece(normalized(negated ? complement(ranges) : ranges));
    }
    if (c == '.') {
      ++pos_;
      return class_piece(normalized(complement({})));
    }
    if (c == '(') {
      // Groups nest by recursion: bounded, so that hostile text cannot overflow the stack.
      if (++group_depth_ > kMaxGroupDepth) error("groups nest deeper than " + std::to_string(kMaxGroupDepth));
      ++pos_;
      skip_space(true);
      const uint32_t rule = helper_rule();
      auto alternatives = read_alternatives(true);  // may add rules: assign after
      bodies_[rule] = std::move(alternatives);
      --group_depth_;
      skip_space(true);
      if (peek() != ')') error("expected ')'");
      ++pos_;
      return {rule_element(rule)};
    }
    if (name_char(c)) {
      const size_t start = pos_;
      const uint32_t rule = rule_id(read_name());
      if (first_use_[rule] == std::string::npos) first_use_[rule] = start;
      return {rule_element(rule)};
    }
    error(std::string("unexpected character '") + c + "'");
  }

  uint32_t read_count() {
    const size_t start = pos_;
    uint64_t value = 0;
    while (peek() >= '0' && peek() <= '9') {
      value = value * 10 + static_cast<uint64_t>(peek() - '0');
      if (value > kMaxRepetition) error_at(start, "repetition count past " + std::to_string(kMaxRepetition));
      ++pos_;
    }
    if (start == pos_) error("expected a repetition count");
    return static_cast<uint32_t>(value);
  }

  Piece read_postfix(Piece item) {
    const char c = peek();
    if (c == '*' || c == '+' || c == '?') {
      ++pos_;
      if (c == '*') return repeat(item, 0, std::nullopt);
      if (c == '+') return repeat(item, 1, std::nullopt);
      return repeat(item, 0, 1);
    }
    if (c != '{') return item;
    ++pos_;
    skip_space(false);
    const uint32_t low = read_count();
    skip_space(false);
    std::optional<uint32_t> high = low;
    if (peek() == ',') {
      ++pos_;
      skip_space(false);
      high = peek() == '}' ? std::nullopt : std::optional(read_count());
      skip_space(false);
    }
    if (peek() != '}') error("expected '}'");
    ++pos_;
    if (high && *high < low) error("repetition {m,n} with n < m");
    return repeat(item, low, high);
  }

  // item{low,high}: low copies, then either a star rule (S ::= item S | ) or a chain of nested optionals
  // (O_k ::= item O_k-1 | ); both end in a rule reference, which the matcher follows without growing its stack.
  Piece repeat(const Piece& item, uint32_t low, std::optional<uint32_t> high) {
    if (item.size() * std::max<uint32_t>(low, 1) > kMaxElements) error("the grammar is too large");
    Piece out;
    for (uint32_t i = 0; i < low; ++i) out.insert(out.end(), item.begin(), item.end());
    if (!high) {
      const uint32_t star = helper_rule();
      Piece again = item;
      again.push_back(rule_element(star));
      bodies_[star] = {std::move(again), Piece{}};
      out.push_back(rule_element(star));
      return out;
    }
    uint32_t previous = 0;
    for (uint32_t k = 0; k < *high - low; ++k) {
      const uint32_t optional = helper_rule();
      Piece more = item;
      if (k > 0) more.push_back(rule_element(previous));
      bodies_[optional] = {std::move(more), Piece{}};
      previous = optional;
    }
    if (*high > low) out.push_back(rule_element(previous));
    return out;
  }

  // ---- rules and elements -----------------------------------------------------------------------------------------
  uint32_t rule_id(const std::string& name) {
    const auto [it, added] = ids_.try_emplace(name, static_cast<uint32_t>(names_.size()));
    if (added) new_rule(name, false);
    return it->second;
  }
  uint32_t helper_rule() {
    const uint32_t id = static_cast<uint32_t>(names_.size());
    std::string name = "_";  // for messages only: helpers are not in the name table, so no user rule collides
    name += std::to_string(id);
    new_rule(name, true);
    return id;
  }
  void new_rule(const std::string& name, bool generated) {
    names_.push_back(name);
    bodies_.emplace_back();
    defined_.push_back(false);
    generated_.push_back(generated);
    first_use_.push_back(std::string::npos);
  }
  static Grammar::Element rule_element(uint32_t rule) { return {Grammar::Kind::Rule, rule}; }

  Grammar::Element byte_element(uint8_t lo, uint8_t hi) {
    ByteSet set;
    set.add_range(lo, hi);
    return set_element(set);
  }
  Grammar::Element set_element(const ByteSet& set) {
    const auto [it, added] = set_ids_.try_emplace(set.bits, static_cast<uint32_t>(sets_.size()));
    if (added) sets_.push_back(set);
    return {Grammar::Kind::Bytes, it->second};
  }

  // A set of code points: one byte set when all are ASCII, else a rule over their UTF-8 encodings (shared by every
  // use of the same set).
  Piece class_piece(const std::vector<Range>& ranges) {
    if (ranges.empty()) error("empty character class");
    if (ranges.back().second <= 0x7F) {
      ByteSet set;
      for (const auto& [lo, hi] : ranges) set.add_range(static_cast<uint8_t>(lo), static_cast<uint8_t>(hi));
      return {set_element(set)};
    }
    std::string key;
    for (const auto& [lo, hi] : ranges) key += std::to_string(lo) + "-" + std::to_string(hi) + ",";
    if (const auto it = class_rules_.find(key); it != class_rules_.end()) return {rule_element(it->second)};
    std::vector<std::vector<std::pair<uint8_t, uint8_t>>> sequences;
    for (const auto& [lo, hi] : ranges) utf8_sequences(lo, hi, sequences);
    const uint32_t rule = helper_rule();
    // Sequences of one length that differ only in their first byte range share an alternative's tail; merging
    // single-byte ones keeps the ASCII part one element.
    ByteSet ascii;
    bool any_ascii = false;
    for (const auto& sequence : sequences) {
      if (sequence.size() == 1) {
        ascii.add_range(sequence[0].first, sequence[0].second);
        any_ascii = true;
        continue;
      }
      Piece alternative;
      for (const auto& [lo, hi] : sequence) alternative.push_back(byte_element(lo, hi));
      bodies_[rule].push_back(std::move(alternative));
    }
    if (any_ascii) bodies_[rule].insert(bodies_[rule].begin(), Piece{set_element(ascii)});
    class_rules_.emplace(key, rule);
    return {rule_element(rule)};
  }

  Grammar layout() {
    Grammar g;
    g.byte_sets_ = std::move(sets_);
    g.rules_.resize(names_.size());
    for (size_t r = 0; r < names_.size(); ++r) {
      g.rules_[r].name = names_[r];
      g.rules_[r].defined = true;
      // An alternative written twice (`"a" | | | "a"`) adds nothing to the language, only parses the matcher would
      // follow twice: each is laid out once.
      std::set<Piece, decltype(&piece_less)> seen(&piece_less);
      for (const Piece& alternative : bodies_[r]) {
        if (!seen.insert(alternative).second) continue;
        g.rules_[r].alternatives.push_back(static_cast<uint32_t>(g.elements_.size()));
        g.elements_.insert(g.elements_.end(), alternative.begin(), alternative.end());
        g.elements_.push_back({Grammar::Kind::End, 0});
        if (g.elements_.size() > kMaxElements) fail("the grammar is too large (over ", kMaxElements, " elements)");
      }
    }
    return g;
  }

  // A rule that can reach itself before consuming a byte would make the matcher expand forever.
  void check_left_recursion(const Grammar& g) const {
    const size_t n = g.rules_.size();
    std::vector<bool> nullable(n, false);
    for (bool changed = true; changed;) {
      changed = false;
      for (size_t r = 0; r < n; ++r) {
        if (nullable[r]) continue;
        for (const uint32_t start : g.rules_[r].alternatives) {
          uint32_t p = start;
          while (g.elements_[p].kind == Grammar::Kind::Rule && nullable[g.elements_[p].index]) ++p;
          if (g.elements_[p].kind == Grammar::Kind::End) {
            nullable[r] = changed = true;
            break;
          }
        }
      }
    }
    std::vector<std::vector<uint32_t>> left(n);  // rules each rule may start with
    for (size_t r = 0; r < n; ++r) {
      for (const uint32_t start : g.rules_[r].alternatives) {
        for (uint32_t p = start; g.elements_[p].kind == Grammar::Kind::Rule; ++p) {
          left[r].push_back(g.elements_[p].index);
          if (!nullable[g.elements_[p].index]) break;
        }
      }
    }
    std::vector<uint8_t> mark(n, 0);  // 0 new, 1 on the path, 2 done
    std::vector<std::pair<uint32_t, size_t>> path;
    for (uint32_t start = 0; start < n; ++start) {
      if (mark[start]) continue;
      path.emplace_back(start, 0);
      mark[start] = 1;
      while (!path.empty()) {
        auto& [rule, next] = path.back();
        if (next == left[rule].size()) {
          mark[rule] = 2;
          path.pop_back();
          continue;
        }
        const uint32_t to = left[rule][next++];
        if (mark[to] == 1) {
          // Name the user's rule on the cycle rather than a generated helper.
          uint32_t named = to;
          for (const auto& [r, unused] : path) {
            if (!generated_[r]) named = r;
          }
          fail("the grammar is left-recursive: rule '", names_[named], "' can reach itself without consuming input");
        }
        if (mark[to] == 0) {
          mark[to] = 1;
          path.emplace_back(to, 0);
        }
      }
    }
  }

  std::string_view text_;
  size_t pos_ = 0;
  int group_depth_ = 0;
  std::unordered_map<std::string, uint32_t> ids_;
  std::vector<std::string> names_;
  std::vector<std::vector<Piece>> bodies_;
  std::vector<bool> defined_;
  std::vector<bool> generated_;
  std::vector<size_t> first_use_;
  std::vector<ByteSet> sets_;
  std::map<std::array<uint64_t, 4>, uint32_t> set_ids_;
  std::unordered_map<std::string, uint32_t> class_rules_;
};

Grammar Grammar::parse(std::string_view gbnf, std::string_view root) {
  return GbnfParser(gbnf).run(root);
}

std::shared_ptr<const Grammar> GrammarCache::compile(const std::string& gbnf) {
  {
    std::lock_guard lock(mutex_);
    for (size_t i = 0; i < entries_.size(); ++i) {
      if (entries_[i].first != gbnf) continue;
      std::rotate(entries_.begin() + static_cast<ptrdiff_t>(i), entries_.begin() + static_cast<ptrdiff_t>(i) + 1,
                  entries_.end());
      return entries_.back().second;
    }
  }
  auto grammar = std::make_shared<const Grammar>(Grammar::parse(gbnf));  // outside the lock: may take a while
  std::lock_guard lock(mutex_);
  if (entries_.size() >= capacity_) entries_.erase(entries_.begin());
  entries_.emplace_back(gbnf, grammar);
  return grammar;
}

}  // namespace ernie
