// A context-free grammar over bytes, the form constrained decoding runs on (grammar_matcher.h).
//
// Grammars are written in GBNF, llama.cpp's notation, which is also what the JSON-Schema compiler emits
// (json_schema.h):
//   rule-name ::= alternative | alternative ...      (one rule per line; a line break is allowed after "::=",
//                                                     after "|" and anywhere inside parentheses)
//   "literal"   [a-z0-9_] [^"\\]   .   rule-name   ( group )   and the postfixes  *  +  ?  {m}  {m,}  {m,n}
//   escapes in literals and classes: \n \r \t \\ \" \[ \] \- \^ \xHH \uHHHH \UHHHHHHHH;  # comments
// Literals and classes are over Unicode code points; they compile to their UTF-8 bytes, so the grammar only ever
// admits well-formed UTF-8 ("." and negated classes exclude surrogates). Repetitions compile to right-recursive
// helper rules, which the matcher runs in constant stack depth.
//
// Compiled form: every alternative is a run of elements ending in End, all in one array; an element matches one
// byte out of a set, or stands for a rule. A left-recursive grammar (a rule that can reach itself without consuming
// a byte) is refused at parse time: the matcher would expand it forever.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace ernie {

// 256 bits, one per byte value.
struct ByteSet {
  std::array<uint64_t, 4> bits{};
  bool has(uint8_t b) const { return (bits[b >> 6] >> (b & 63)) & 1; }
  void add(uint8_t b) { bits[b >> 6] |= uint64_t{1} << (b & 63); }
  void add_range(uint8_t lo, uint8_t hi) {
    for (int b = lo; b <= hi; ++b) add(static_cast<uint8_t>(b));
  }
  bool operator==(const ByteSet&) const = default;
};

// Token masks by key (a vocabulary's id and a grammar state), shared by every matcher of one grammar: requests that
// use the same schema reuse each other's masks. Thread-safe; holds at most `capacity` masks and starts over when full.
class MaskCache {
 public:
  using Mask = std::shared_ptr<const std::vector<uint64_t>>;
  explicit MaskCache(size_t capacity = 256) : capacity_(capacity) {}
  Mask find(const std::string& key) const {
    std::lock_guard lock(mutex_);
    const auto it = masks_.find(key);
    return it == masks_.end() ? nullptr : it->second;
  }
  void insert(std::string key, Mask mask) {
    std::lock_guard lock(mutex_);
    if (masks_.size() >= capacity_) masks_.clear();
    masks_.emplace(std::move(key), std::move(mask));
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, Mask> masks_;
  size_t capacity_;
};

class Grammar {
 public:
  enum class Kind : uint8_t { End, Bytes, Rule };
  struct Element {
    Kind kind;
    uint32_t index;  // Bytes: into byte_sets(); Rule: the rule's number
  };

  // Parses GBNF; `root` names the start rule. Raises ernie::Error with the line and column of the first problem:
  // syntax, an undefined or doubly defined rule, a missing root, left recursion, a repetition count past 100000,
  // or a grammar of more than 2 million elements.
  static Grammar parse(std::string_view gbnf, std::string_view root = "root");

  const Element& element(uint32_t position) const { return elements_[position]; }
  // Where each alternative of `rule` starts in the element array.
  std::span<const uint32_t> alternatives(uint32_t rule) const { return rules_[rule].alternatives; }
  const ByteSet& byte_set(uint32_t index) const { return byte_sets_[index]; }
  uint32_t root() const { return root_; }
  size_t rule_count() const { return rules_.size(); }
  const std::string& rule_name(uint32_t rule) const { return rules_[rule].name; }
  size_t element_count() const { return elements_.size(); }
  // The masks matchers of this grammar have found (grammar_matcher.h); mutable behind its own lock.
  MaskCache& shared_masks() const { return *masks_; }

 private:
  friend class GbnfParser;
  struct Rule {
    std::string name;
    std::vector<uint32_t> alternatives;
    bool defined = false;
    size_t line = 0;  // of its first use or definition, for messages
  };
  std::vector<Element> elements_;
  std::vector<ByteSet> byte_sets_;
  std::vector<Rule> rules_;
  uint32_t root_ = 0;
  std::shared_ptr<MaskCache> masks_ = std::make_shared<MaskCache>();
};

// Compiled grammars by their GBNF text, so that requests with the same schema share one Grammar (and its masks).
// Thread-safe; keeps the `capacity` most recently used.
class GrammarCache {
 public:
  explicit GrammarCache(size_t capacity = 16) : capacity_(capacity) {}
  // Raises ernie::Error as Grammar::parse does (failures are not cached).
  std::shared_ptr<const Grammar> compile(const std::string& gbnf);

 private:
  std::mutex mutex_;
  std::vector<std::pair<std::string, std::shared_ptr<const Grammar>>> entries_;  // most recently used last
  size_t capacity_;
};

}  // namespace ernie
