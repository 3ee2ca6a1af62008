// Constrained decoding: which tokens a grammar (grammar.h) allows next, and the grammar's state as tokens are
// accepted.
//
// The state is a set of stacks of element positions, a pushdown automaton running all parses at once. Every stack's
// top is a byte-set element: a byte advances every stack whose top admits it and drops the rest. The tokens allowed
// next are found by walking a trie of the vocabulary's byte strings (TokenTrie, built once per tokenizer) depth-first
// from the current state, pruning a subtree as soon as no stack survives its prefix. States met on the way are
// interned and their byte transitions remembered: inside a free-text string nearly every byte leads back to one of a
// few states, so a walk over the ~440k nodes of a 100k-token vocabulary costs a table lookup per node rather than a
// stack expansion. A mask is also cached per distinct state, so a state the generation returns to costs one lookup.
//
// Not thread-safe: each constrained sequence owns a matcher. The trie is read-only and may be shared.
#pragma once

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/grammar/grammar.h"
#include "tokenizer/tokenizer.h"

namespace ernie {

// The tokens that can appear in constrained text, by their bytes: every known, non-special token with at least one
// byte. Special tokens (end-of-sequence among them) are never part of the text; the caller decides about those.
class TokenTrie {
 public:
  explicit TokenTrie(const Tokenizer& tokenizer);

  struct Node {
    uint8_t byte;          // the byte leading here from the parent
    uint16_t depth;        // 1 for the root's children
    uint32_t subtree_end;  // index of the first node after this one's subtree
    uint32_t first_token;  // into tokens(): the tokens whose bytes end here
    uint32_t token_count;
  };
  std::span<const Node> nodes() const { return nodes_; }  // depth-first order
  std::span<const int32_t> tokens(const Node& node) const {
    return std::span(tokens_).subspan(node.first_token, node.token_count);
  }
  std::string_view bytes(int32_t id) const;  // "" for a token outside the trie
  int vocab_size() const { return vocab_size_; }
  size_t max_depth() const { return max_depth_; }
  uint64_t id() const { return id_; }  // unique in the process: names this vocabulary in shared mask caches

 private:
  std::vector<Node> nodes_;
  std::vector<int32_t> tokens_;
  std::vector<uint32_t> offsets_;  // per id: its bytes in pool_ are [offsets_[id], offsets_[id + 1])
  std::string pool_;
  int vocab_size_ = 0;
  size_t max_depth_ = 0;
  uint64_t id_;
};

class GrammarMatcher {
 public:
  // Starts at the grammar's root. The trie must outlive the matcher. `max_interned_states` bounds the table of states
  // a walk remembers (tests lower it to exercise the walk without the table).
  GrammarMatcher(std::shared_ptr<const Grammar> grammar, const TokenTrie& trie, size_t max_interned_states = 32768);

  // Bit t of the mask (word t / 64) is set when token t may come next. Sized for the trie's vocabulary.
  const std::vector<uint64_t>& allowed_tokens();
  bool allows(int32_t token);  // one token, without computing the whole mask
  // Advances past the token's bytes; returns false, changing nothing, if the grammar does not allow it.
  bool accept(int32_t token);
  // The same for raw bytes (any, not only a token's): false, changing nothing, if the grammar cannot continue so.
  bool accept_bytes(std::string_view bytes);

  bool can_end() const { return state_.accepting; }                          // the text so far is complete
  bool must_end() const { return state_.accepting && state_.ends.empty(); }  // and nothing may follow it

  size_t cached_masks() const { return masks_.size(); }

 private:
  // Stacks stored end to end: stack i is data[ends[i - 1], ends[i]).
  struct State {
    std::vector<uint32_t> data;
    std::vector<uint32_t> ends;
    bool accepting = false;
    void clear() {
      data.clear();
      ends.clear();
      accepting = false;
    }
    bool dead() const { return ends.empty() && !accepting; }
  };
  // Where each byte leads from an interned state: an interned id, kDead, or kUnknown (not computed yet).
  using Transitions = std::array<int32_t, 256>;
  void expand(std::vector<uint32_t>& stack, State& out, size_t depth);
  // An index of the hashes of a set of stacks, built once the set is large.
  struct StackIndex {
    std::unordered_multimap<uint64_t, uint32_t> hashes;
    const State* of = nullptr;  // the set it indexes
    size_t count = 0;           // of how many of its stacks
  };
  static bool insert_stack(const std::vector<uint32_t>& stack, State& set, StackIndex& index, size_t max_elements);
  void advance(const State& from, uint8_t byte, State& to);
  bool advance_bytes(const State& from, std::string_view bytes, State& out);
  static std::string key(const State& state);
  int32_t intern(const State& state);
  int32_t transition(int32_t from, uint8_t byte);
  bool walk_interned();  // false when the state table outgrew its bound on the way
  void walk_direct();    // the same walk without the table
  void mark(const TokenTrie::Node& node);

  std::shared_ptr<const Grammar> grammar_;
  const TokenTrie& trie_;
  State state_;
  std::vector<State> levels_;  // allowed_tokens(): the state after each trie depth
  State step_a_, step_b_;      // advance_bytes() scratch
  State probe_;                // allows() and accept_bytes(): the state after the bytes
  // expand(): one stack per recursion depth, grown on demand (a deque, so that growing keeps references valid).
  std::deque<std::vector<uint32_t>> scratch_;
  std::vector<uint64_t> mask_;
  std::unordered_map<std::string, std::vector<uint64_t>> masks_;
  std::vector<State> interned_;                            // states met by trie walks, by id
  std::vector<std::unique_ptr<Transitions>> transitions_;  // by id; allocated at a state's first transition
  std::unordered_map<std::string, int32_t> interned_ids_;
  std::vector<uint8_t> interned_open_;  // per interned state: 1 if it has stacks (bytes may follow), kept compact for
                                        // the walk's inner loop
  size_t interned_bytes_ = 0;
  size_t max_interned_states_;
  std::vector<int32_t> level_ids_;  // walk_interned(): the state after each trie depth
  State next_;                      // transition() scratch
  StackIndex out_index_;            // expand(): of the state being built
  State expanded_;                  // expand(): the stacks met at a rule reference since advance() began
  StackIndex expanded_index_;
};

}  // namespace ernie
